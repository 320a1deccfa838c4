package delivery_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/campaignmesh/campaignmesh/services/delivery"
)

var (
	testKey    = delivery.TrackingKey{Current: []byte("0123456789abcdef0123456789abcdef")}
	rotatedKey = delivery.TrackingKey{Current: []byte("fedcba9876543210fedcba9876543210"), Previous: testKey.Current}
)

func tokenOf(t *testing.T, link, prefix, suffix string) string {
	t.Helper()
	if !strings.HasPrefix(link, prefix) || !strings.HasSuffix(link, suffix) {
		t.Fatalf("link %q is not %s…%s", link, prefix, suffix)
	}
	return strings.TrimSuffix(strings.TrimPrefix(link, prefix), suffix)
}

func TestTrackingLinksRoundTrip(t *testing.T) {
	l := delivery.TrackingLinks{BaseURL: "https://127.0.0.1:8443/", Key: testKey}
	click := tokenOf(t, l.Click("42", "https://shop.example.com/a?b=c#d"), "https://127.0.0.1:8443/t/c/", "")
	ref, target, err := testKey.Verify(delivery.TokenClick, click)
	if err != nil || ref != "42" || target != "https://shop.example.com/a?b=c#d" {
		t.Fatalf("click: %q %q %v", ref, target, err)
	}
	open := tokenOf(t, l.Open("42"), "https://127.0.0.1:8443/t/o/", ".gif")
	if ref, _, err := testKey.Verify(delivery.TokenOpen, open); err != nil || ref != "42" {
		t.Fatalf("open: %q %v", ref, err)
	}
	unsub := tokenOf(t, l.Unsubscribe("42"), "https://127.0.0.1:8443/u/", "")
	if ref, _, err := testKey.Verify(delivery.TokenUnsubscribe, unsub); err != nil || ref != "42" {
		t.Fatalf("unsubscribe: %q %v", ref, err)
	}
	// A token is only good for its own kind: an open pixel is not an unsubscribe.
	if _, _, err := testKey.Verify(delivery.TokenUnsubscribe, open); err != delivery.ErrBadToken {
		t.Errorf("open token accepted as unsubscribe: %v", err)
	}
	// After a rotation, links already sent keep working; new ones are under the new key only.
	if ref, _, err := rotatedKey.Verify(delivery.TokenClick, click); err != nil || ref != "42" {
		t.Errorf("rotated key refuses a link of the previous key: %v", err)
	}
	if _, _, err := testKey.Verify(delivery.TokenClick, rotatedKey.Sign(delivery.TokenClick, "42", "https://x.example")); err != delivery.ErrBadToken {
		t.Errorf("old key verifies a token of the new one: %v", err)
	}
}

// Every way of tampering with a token is refused alike: a changed byte anywhere (ref, target,
// signature), a truncation, another key, garbage.
func TestForgedOrAlteredTokensRefused(t *testing.T) {
	tok := testKey.Sign(delivery.TokenClick, "42", "https://shop.example.com/")
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x01
		if _, _, err := testKey.Verify(delivery.TokenClick, base64.RawURLEncoding.EncodeToString(b)); err != delivery.ErrBadToken {
			t.Errorf("byte %d flipped: accepted (%v)", i, err)
		}
	}
	other := delivery.TrackingKey{Current: []byte("another key of thirty-two bytes!")}
	for name, bad := range map[string]string{
		"truncated":   tok[:len(tok)-2],
		"other key":   other.Sign(delivery.TokenClick, "42", "https://shop.example.com/"),
		"empty":       "",
		"not base64":  "!!!!",
		"short":       "AQ",
		"huge":        strings.Repeat("A", 10000),
		"padding":     tok + "==",
		"other kind":  testKey.Sign(delivery.TokenOpen, "42", ""),
		"unsafe link": signRaw(testKey, 'c', "42", "javascript:alert(1)"),
	} {
		if _, _, err := testKey.Verify(delivery.TokenClick, bad); err != delivery.ErrBadToken {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
}

// signRaw signs a click whose target Links would never have made (Sign does not check it: the
// verifier must).
func signRaw(k delivery.TrackingKey, kind delivery.TokenKind, ref, target string) string {
	return k.Sign(kind, ref, target)
}

// Only absolute http(s) links of bounded length are tracked; others go out as they are.
func TestUntrackableLinksStayAsTheyAre(t *testing.T) {
	l := delivery.TrackingLinks{BaseURL: "https://t.example", Key: testKey}
	for _, target := range []string{"javascript:alert(1)", "mailto:a@b.c", "/relative", "https://", "https://x.example/" + strings.Repeat("a", delivery.MaxTrackedURL)} {
		if got := l.Click("42", target); got != target {
			t.Errorf("%.40q became %.60q", target, got)
		}
	}
	if got := l.Click(strings.Repeat("9", delivery.MaxRefLen+1), "https://x.example/"); got != "https://x.example/" {
		t.Errorf("overlong ref tracked: %q", got)
	}
}
