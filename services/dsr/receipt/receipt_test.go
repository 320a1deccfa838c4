package receipt_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/services/dsr/receipt"
)

func doc() receipt.Document {
	t := time.Date(2026, 11, 29, 6, 0, 0, 0, time.UTC)
	return receipt.Document{
		Version: receipt.Version, RequestID: "dsr_1", Tenant: "t1", Kind: "erasure", Regulation: "gdpr",
		SubjectHashes: []string{"aa"}, CoveredHashes: []string{"aa", "bb"},
		Participants: []receipt.Participant{{Name: "analytics", Outcome: "done", Counts: map[string]int64{"z": 1, "events": 3}}},
		CreateTime:   receipt.FormatTime(t), CompleteTime: receipt.FormatTime(t.Add(time.Minute)), DeadlineTime: receipt.FormatTime(t.Add(30 * 24 * time.Hour)),
	}
}

func TestCanonicalIsSortedAndCompact(t *testing.T) {
	b, err := receipt.Canonical(doc())
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if strings.ContainsAny(s, " \n") {
		t.Fatalf("spaces in %s", s)
	}
	// Re-encoding through a generic map (which encoding/json sorts) gives the same bytes.
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(m)
	if string(again) != s {
		t.Fatalf("not canonical:\n%s\n%s", s, again)
	}
}

func TestSignVerifyAndEveryChangedByteFails(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	r, err := receipt.Sign(doc(), priv)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]ed25519.PublicKey{receipt.KeyID(pub): pub}
	d, err := receipt.Verify(r, keys)
	if err != nil || d.RequestID != "dsr_1" || d.Participants[0].Counts["events"] != 3 {
		t.Fatalf("verify: %+v %v", d, err)
	}
	for i := range len(r.Payload) {
		b := []byte(r.Payload)
		b[i] ^= 0x01
		changed := r
		changed.Payload = string(b)
		if _, err := receipt.Verify(changed, keys); err == nil {
			t.Fatalf("byte %d changed still verifies", i)
		}
	}
	sig := append([]byte(nil), r.Signature...)
	sig[0] ^= 1
	if _, err := receipt.Verify(receipt.Receipt{Payload: r.Payload, Signature: sig, KeyID: r.KeyID}, keys); !errors.Is(err, receipt.ErrSignatureMismatch) {
		t.Fatalf("changed signature: %v", err)
	}
	if _, err := receipt.Verify(receipt.Receipt{Payload: r.Payload, Signature: r.Signature, KeyID: "other"}, keys); !errors.Is(err, receipt.ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
	// The JSON form round-trips (what a saved receipt file holds).
	data, _ := json.Marshal(r)
	var back receipt.Receipt
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if _, err := receipt.Verify(back, keys); err != nil {
		t.Fatalf("round trip: %v", err)
	}
}
