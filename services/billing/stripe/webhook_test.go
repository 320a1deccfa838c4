package stripe_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/services/billing/stripe"
)

const testSecret = "whsec_test_secret_value"

func TestVerify(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	body := []byte(`{"id":"evt_1","type":"invoice.paid","created":1764417600,"data":{"object":{"id":"in_1","object":"invoice","customer":"cus_1","status":"paid"}}}`)
	good := stripe.Sign([]byte(testSecret), body, now)
	sig := strings.TrimPrefix(good[strings.Index(good, "v1="):], "v1=")
	other := stripe.Sign([]byte("whsec_other"), body, now)
	otherSig := strings.TrimPrefix(other[strings.Index(other, "v1="):], "v1=")
	ts := now.Unix()
	tests := []struct {
		name   string
		body   []byte
		header string
		want   error
	}{
		{"good", body, good, nil},
		{"good among several v1 and a v0", body, fmt.Sprintf("t=%d,v1=%s,v0=abcd,v1=%s", ts, otherSig, sig), nil},
		{"spaces around parts", body, fmt.Sprintf("t=%d, v1=%s", ts, sig), nil},
		{"missing header", body, "", stripe.ErrNoSignature},
		{"no v1", body, fmt.Sprintf("t=%d,v0=%s", ts, sig), stripe.ErrNoSignature},
		{"no timestamp", body, "v1=" + sig, stripe.ErrNoSignature},
		{"other secret", body, other, stripe.ErrBadSignature},
		{"body changed", append([]byte(" "), body...), good, stripe.ErrBadSignature},
		{"timestamp changed", body, fmt.Sprintf("t=%d,v1=%s", ts+1, sig), stripe.ErrBadSignature},
		{"not hex", body, fmt.Sprintf("t=%d,v1=zz", ts), stripe.ErrBadSignature},
		{"malformed part", body, fmt.Sprintf("t=%d,v1", ts), stripe.ErrBadSignature},
		{"bad timestamp", body, "t=abc,v1=" + sig, stripe.ErrBadSignature},
		{"too old", body, stripe.Sign([]byte(testSecret), body, now.Add(-5*time.Minute-time.Second)), stripe.ErrTooOld},
		{"too far in the future", body, stripe.Sign([]byte(testSecret), body, now.Add(5*time.Minute+time.Second)), stripe.ErrTooOld},
		{"at the edge of the tolerance", body, stripe.Sign([]byte(testSecret), body, now.Add(-5*time.Minute)), nil},
	}
	v, err := stripe.NewVerifier([]byte(testSecret), stripe.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.Verify(tt.body, tt.header)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), testSecret) || err != nil && strings.Contains(err.Error(), sig) {
				t.Fatalf("error %q echoes a secret or a signature", err)
			}
		})
	}
}

func TestVerifyTolerance(t *testing.T) {
	now := time.Unix(1764417600, 0)
	body := []byte(`{}`)
	v, err := stripe.NewVerifier([]byte(testSecret), stripe.WithClock(func() time.Time { return now }), stripe.WithTolerance(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(body, stripe.Sign([]byte(testSecret), body, now.Add(-59*time.Minute))); err != nil {
		t.Fatalf("within a configured hour: %v", err)
	}
	if err := v.Verify(body, stripe.Sign([]byte(testSecret), body, now.Add(-61*time.Minute))); !errors.Is(err, stripe.ErrTooOld) {
		t.Fatalf("past a configured hour: %v", err)
	}
	if _, err := stripe.NewVerifier(nil); err == nil {
		t.Fatal("empty secret accepted")
	}
}

func TestConstructEvent(t *testing.T) {
	now := time.Unix(1764417600, 0)
	v, err := stripe.NewVerifier([]byte(testSecret), stripe.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, body, customer string
	}{
		{"customer id", `{"id":"evt_1","type":"invoice.payment_failed","created":1764417000,"data":{"object":{"id":"in_1","object":"invoice","customer":"cus_A","status":"open","attempt_count":2}}}`, "cus_A"},
		{"customer expanded", `{"id":"evt_2","type":"customer.subscription.updated","created":1764417000,"data":{"object":{"id":"sub_1","object":"subscription","customer":{"id":"cus_B","object":"customer"},"status":"past_due"}}}`, "cus_B"},
		{"no customer", `{"id":"evt_3","type":"ping","created":1764417000,"data":{"object":{"id":"x"}}}`, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, err := v.ConstructEvent([]byte(tt.body), stripe.Sign([]byte(testSecret), []byte(tt.body), now))
			if err != nil {
				t.Fatal(err)
			}
			if e.Data.Object.Customer != tt.customer || e.ID == "" || e.Created != 1764417000 {
				t.Fatalf("event = %+v", e)
			}
		})
	}
	e, _ := stripe.DecodeEvent([]byte(`{"id":"evt_1","type":"invoice.payment_failed","created":1764417000,"data":{"object":{"customer":"cus_A","status":"open","attempt_count":2}}}`))
	if e.Type != "invoice.payment_failed" || e.Data.Object.Status != "open" || e.Data.Object.AttemptCount != 2 {
		t.Fatalf("decoded %+v", e)
	}
	for _, bad := range []string{`not json`, `{"type":"x","created":1}`, `{"id":"evt","created":1}`, `{"id":"evt","type":"x"}`} {
		body := []byte(bad)
		if _, err := v.ConstructEvent(body, stripe.Sign([]byte(testSecret), body, now)); !errors.Is(err, stripe.ErrBadPayload) {
			t.Fatalf("%s: %v", bad, err)
		}
	}
}

func TestLoadWebhookSecret(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	if err := os.WriteFile(good, []byte("  "+testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := stripe.LoadWebhookSecret(good)
	if err != nil || string(b) != testSecret {
		t.Fatalf("LoadWebhookSecret = %q, %v", b, err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{empty, filepath.Join(dir, "missing")} {
		if _, err := stripe.LoadWebhookSecret(p); err == nil {
			t.Errorf("%s: no error", p)
		}
	}
}
