package sendgrid_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	sgstandin "github.com/campaignmesh/campaignmesh/internal/standin/sendgrid"
	"github.com/campaignmesh/campaignmesh/services/delivery/sendgrid"
)

// signedSample sends one message through a stand-in and returns the first webhook post it
// made, signed by the stand-in's key, with that key.
func signedSample(t *testing.T) (captured, string) {
	t.Helper()
	hook := &capture{}
	hookSrv := httptest.NewServer(hook)
	t.Cleanup(hookSrv.Close)
	sa, c := start(t, sgstandin.Config{WebhookURL: hookSrv.URL}, 5*time.Second)
	if _, err := c.Send(context.Background(), mailTo("ann@example.com")); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 10*time.Second, func() bool { return len(hook.all()) > 0 }, "a webhook post")
	return hook.all()[0], sa.PublicKey()
}

func TestVerifySignature(t *testing.T) {
	t.Parallel()
	sample, pub := signedSample(t)
	key, err := sendgrid.ParsePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	sec, err := strconv.ParseInt(sample.ts, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	signedAt := time.Unix(sec, 0)
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	altered := append([]byte(nil), sample.body...)
	altered[len(altered)/2] ^= 0x01
	cases := []struct {
		name      string
		key       *ecdsa.PublicKey
		now       time.Time
		sig, ts   string
		body      []byte
		wantValid bool
	}{
		{"genuine", key, signedAt, sample.signature, sample.ts, sample.body, true},
		{"genuine, within the window", key, signedAt.Add(9 * time.Minute), sample.signature, sample.ts, sample.body, true},
		{"altered body", key, signedAt, sample.signature, sample.ts, altered, false},
		{"body with appended event", key, signedAt, sample.signature, sample.ts, append(append([]byte(nil), sample.body[:len(sample.body)-1]...), []byte(`,{"event":"open"}]`)...), false},
		{"altered timestamp", key, signedAt, sample.signature, strconv.FormatInt(sec+1, 10), sample.body, false},
		{"old timestamp (replay)", key, signedAt.Add(11 * time.Minute), sample.signature, sample.ts, sample.body, false},
		{"timestamp in the future", key, signedAt.Add(-11 * time.Minute), sample.signature, sample.ts, sample.body, false},
		{"other key", &other.PublicKey, signedAt, sample.signature, sample.ts, sample.body, false},
		{"no signature", key, signedAt, "", sample.ts, sample.body, false},
		{"no timestamp", key, signedAt, sample.signature, "", sample.body, false},
		{"signature not base64", key, signedAt, "!!", sample.ts, sample.body, false},
		{"signature garbage", key, signedAt, base64.StdEncoding.EncodeToString([]byte("garbage")), sample.ts, sample.body, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := sendgrid.NewVerifier(tc.key, 10*time.Minute, func() time.Time { return tc.now })
			err := v.Verify(tc.sig, tc.ts, tc.body)
			if tc.wantValid && err != nil {
				t.Fatalf("refused a genuine request: %v", err)
			}
			if !tc.wantValid && !errors.Is(err, sendgrid.ErrBadSignature) {
				t.Fatalf("got %v, want ErrBadSignature", err)
			}
		})
	}
}

func TestParsePublicKey(t *testing.T) {
	t.Parallel()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sendgrid.ParsePublicKey(base64.StdEncoding.EncodeToString(der)); err == nil {
		t.Fatal("accepted a P-384 key")
	}
	if _, err := sendgrid.ParsePublicKey("not base64!"); err == nil {
		t.Fatal("accepted garbage")
	}
	_, pub := signedSample(t)
	pem := "-----BEGIN PUBLIC KEY-----\n" + pub[:40] + "\n" + pub[40:] + "\n-----END PUBLIC KEY-----\n"
	if _, err := sendgrid.ParsePublicKey(pem); err != nil {
		t.Fatalf("PEM form refused: %v", err)
	}
}

func TestParseEvents(t *testing.T) {
	t.Parallel()
	body := []byte(`[
	 {"email":"a@example.com","timestamp":1513299569,"smtp-id":"<x@y>","event":"bounce","category":["cat facts","b"],
	  "sg_event_id":"ev1","sg_message_id":"14c5d75ce93.filter0001.16648.5515E0B88.0","reason":"500 unknown recipient",
	  "status":"5.0.0","type":"bounce","bounce_classification":"Invalid Address","ledger_id":"L-9","campaign":"c-1"},
	 {"email":"a@example.com","timestamp":1513299570,"event":"open","sg_machine_open":true,"useragent":"UA","ip":"192.0.2.1",
	  "category":"one","sg_event_id":"ev2","sg_message_id":"abc.x","attempt":5},
	 {"email":"a@example.com","timestamp":1513299571,"event":"group_unsubscribe","asm_group_id":42,"sg_message_id":"abc.y","url":"https://x"}
	]`)
	events, err := sendgrid.ParseEvents(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 3 {
		t.Fatalf("%d events", len(events))
	}
	b := events[0]
	if b.Event != sendgrid.EventBounce || b.BounceType != "bounce" || b.Status != "5.0.0" || b.Reason == "" || b.BounceClassification != "Invalid Address" ||
		b.Timestamp != time.Unix(1513299569, 0).UTC() || b.SendGridMessageID() != "14c5d75ce93" || len(b.Categories) != 2 ||
		b.CustomArgs["ledger_id"] != "L-9" || b.CustomArgs["campaign"] != "c-1" || len(b.CustomArgs) != 2 {
		t.Fatalf("bounce parsed as %+v", b)
	}
	o := events[1]
	if !o.MachineOpen || o.UserAgent != "UA" || o.IP != "192.0.2.1" || o.Categories[0] != "one" || o.Attempt != "5" || o.CustomArgs != nil {
		t.Fatalf("open parsed as %+v", o)
	}
	if events[2].ASMGroupID != 42 || events[2].URL != "https://x" {
		t.Fatalf("group unsubscribe parsed as %+v", events[2])
	}
	for _, bad := range []string{`{}`, `[{"email":"a"}]`, `[{"event":"open","timestamp":"yesterday"}]`, `[{"event":"open","category":{"a":1}}]`, `nope`} {
		if _, err := sendgrid.ParseEvents([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

func FuzzParseEvents(f *testing.F) {
	f.Add([]byte(`[{"event":"delivered","email":"a@b","timestamp":1,"sg_message_id":"x.y","ledger_id":"1"}]`))
	f.Add([]byte(`[{"event":"bounce","category":["a"],"asm_group_id":1,"sg_machine_open":true}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		events, err := sendgrid.ParseEvents(body)
		if err != nil {
			return
		}
		for _, e := range events {
			if e.Event == "" {
				t.Fatalf("parsed an event without a type from %q", body)
			}
		}
	})
}

func TestDedupKey(t *testing.T) {
	t.Parallel()
	at := time.Unix(1_800_000_000, 0)
	a := sendgrid.Event{Event: "delivered", MessageID: "m.1", Timestamp: at, EventID: "e1"}
	b := a
	b.EventID = "e2" // a redelivery with a new sg_event_id
	if a.DedupKey() != b.DedupKey() {
		t.Fatal("a redelivery with a new sg_event_id is a new event")
	}
	c1 := sendgrid.Event{Event: "click", MessageID: "m.1", Timestamp: at, URL: "https://a"}
	c2 := c1
	c2.URL = "https://b"
	if c1.DedupKey() == c2.DedupKey() || a.DedupKey() == c1.DedupKey() {
		t.Fatal("distinct events share a key")
	}
}
