package stripe_test

import (
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/services/billing/stripe"
)

// FuzzVerifyEvent: whatever body and Stripe-Signature header arrive at /webhooks/stripe, the
// verifier never panics, and it accepts only a header carrying the body's own signature under
// the secret (the one Sign computes for the header's t): a forged or altered webhook is never
// acted on.
func FuzzVerifyEvent(f *testing.F) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	body := `{"id":"evt_1","type":"invoice.payment_failed","created":1764417600,"data":{"object":{"id":"in_1","object":"invoice","customer":"cus_1"}}}`
	f.Add(body, stripe.Sign([]byte(testSecret), []byte(body), now))
	f.Add(body, "t=1764417600,v1=00,v1=zz,v0=11")
	f.Add("{}", "t=,v1=")
	f.Add("[", ",,,=,t=99999999999999999999")
	v, err := stripe.NewVerifier([]byte(testSecret), stripe.WithClock(func() time.Time { return now }))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, payload, header string) {
		_, eventErr := v.VerifyEvent([]byte(payload), header)
		if v.Verify([]byte(payload), header) != nil {
			if eventErr == nil {
				t.Fatalf("VerifyEvent accepted what Verify refused: %q %q", payload, header)
			}
			return
		}
		// Accepted: some v1 of the header must be the body's signature at the header's t.
		ok := false
		for _, part := range strings.Split(header, ",") {
			ts, isT := strings.CutPrefix(strings.TrimSpace(part), "t=")
			if !isT {
				continue
			}
			for _, p := range strings.Split(header, ",") {
				if sig, isV1 := strings.CutPrefix(strings.TrimSpace(p), "v1="); isV1 && sig != "" && strings.EqualFold(sig, signatureAt(payload, ts)) {
					ok = true
				}
			}
		}
		if !ok {
			t.Fatalf("accepted a header without the body's signature: %q %q", payload, header)
		}
	})
}

// signatureAt is the v1 signature of payload at the header's t (as the string it carries).
func signatureAt(payload, ts string) string {
	var unix int64
	for _, c := range ts {
		if c < '0' || c > '9' || unix > 1<<40 {
			return ""
		}
		unix = unix*10 + int64(c-'0')
	}
	s := stripe.Sign([]byte(testSecret), []byte(payload), time.Unix(unix, 0))
	return s[strings.Index(s, "v1=")+3:]
}
