package privacy_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
)

func hasher(t *testing.T, key string) *privacy.Hasher {
	t.Helper()
	h, err := privacy.NewHasher([]byte(strings.Repeat(key, 32)))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHashesAreStablePerTenantAndKeyed(t *testing.T) {
	h, other := hasher(t, "a"), hasher(t, "b")
	again := hasher(t, "a") // a second hasher with the same key: hashes are a function of key, tenant and value
	if h.SubjectHash("t1", "u1") != again.SubjectHash("t1", "u1") || h.ValueHash("t1", "x") != again.ValueHash("t1", "x") {
		t.Fatal("a hash is not stable")
	}
	for name, pair := range map[string][2]string{
		"tenants":           {h.SubjectHash("t1", "u1"), h.SubjectHash("t2", "u1")},
		"keys":              {h.SubjectHash("t1", "u1"), other.SubjectHash("t1", "u1")},
		"values":            {h.SubjectHash("t1", "u1"), h.SubjectHash("t1", "u2")},
		"subject vs value":  {h.SubjectHash("t1", "u1"), strings.TrimPrefix(h.ValueHash("t1", "u1"), "h:")},
		"tenant boundaries": {h.SubjectHash("t1", "2u"), h.SubjectHash("t12", "u")},
	} {
		if pair[0] == pair[1] {
			t.Errorf("%s: equal hashes %s", name, pair[0])
		}
	}
	if !privacy.IsSubjectHash(h.SubjectHash("t1", "u1")) || privacy.IsSubjectHash("u1") {
		t.Error("IsSubjectHash")
	}
	if v := h.ValueHash("t1", "x"); !strings.HasPrefix(v, "h:") || len(v) != 66 {
		t.Errorf("ValueHash %q", v)
	}
	if _, err := privacy.NewHasher([]byte("short")); err == nil {
		t.Error("a short key was accepted")
	}
}

func TestTruncateIP(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.77":         "203.0.113.0",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1::",
		"::ffff:198.51.100.9":  "198.51.100.0",
		"fe80::1%eth0":         "fe80::",
		"not an address":       "",
		"":                     "",
	} {
		if got := privacy.TruncateIP(in); got != want {
			t.Errorf("TruncateIP(%q) = %q, want %q", in, got, want)
		}
	}
	if privacy.ApplyIP(privacy.IPDrop, "1.2.3.4") != "" || privacy.ApplyIP("", "1.2.3.4") != "1.2.3.4" {
		t.Error("ApplyIP")
	}
}

func TestPolicyActions(t *testing.T) {
	var zero privacy.Policy
	if zero.TouchesEvents() || zero.PropertyAction("email") != privacy.ActionKeep {
		t.Error("the default policy changes events")
	}
	p := privacy.Policy{PropertyRules: map[string]privacy.Action{"email": privacy.ActionHash, "plan": privacy.ActionKeep}, DefaultPropertyAction: privacy.ActionDrop}
	if p.PropertyAction("email") != privacy.ActionHash || p.PropertyAction("plan") != privacy.ActionKeep || p.PropertyAction("other") != privacy.ActionDrop || !p.TouchesEvents() {
		t.Errorf("actions of %+v", p)
	}
}

// TestViewFollowsTheBucket: a View loads what is in the bucket before Watch returns and then
// follows puts and deletes.
func TestViewFollowsTheBucket(t *testing.T) {
	nc, err := nats.Connect(natstest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := privacy.OpenBucket(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := privacy.OpenBucket(ctx, js); err != nil || again.Bucket() != privacy.Bucket {
		t.Fatalf("second open: %v", err)
	}
	h := hasher(t, "k")
	before := h.SubjectHash("t1", "old")
	if err := privacy.PutSuppression(ctx, kv, "t1", before, "dsr_1"); err != nil {
		t.Fatal(err)
	}
	if err := privacy.PutPolicy(ctx, kv, "t1", privacy.Policy{Version: 2, RetentionDays: 30}); err != nil {
		t.Fatal(err)
	}
	v, err := privacy.Watch(ctx, kv, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if !v.Suppressed("t1", before) || v.Suppressed("t2", before) || v.Policy("t1").RetentionDays != 30 {
		t.Fatal("Watch returned before the bucket's contents were loaded")
	}
	after := h.SubjectHash("t1", "new")
	if err := privacy.PutSuppression(ctx, kv, "t1", after, "dsr_2"); err != nil {
		t.Fatal(err)
	}
	if err := privacy.DeleteSuppression(ctx, kv, "t1", before); err != nil {
		t.Fatal(err)
	}
	if err := privacy.PutPolicy(ctx, kv, "t1", privacy.Policy{Version: 3, IP: privacy.IPTruncate}); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 10*time.Second, func() bool {
		return v.Suppressed("t1", after) && !v.Suppressed("t1", before) && v.Policy("t1").IP == privacy.IPTruncate
	}, "the view did not follow the bucket")
	if v.Suppressions("t1") != 1 {
		t.Errorf("suppressions = %d, want 1", v.Suppressions("t1"))
	}
	v.Apply(privacy.PolicyKey("t1"), []byte(`{"version":1,"retention_days":9}`), false)
	if v.Policy("t1").Version != 3 {
		t.Error("an older policy version replaced a newer one")
	}
}

// The hashes' definition, which stored suppressions depend on: a tenant key
// HMAC-SHA-256(key, "campaignmesh privacy tenant" 0 tenant), then hex(HMAC-SHA-256(tenant key,
// domain 0 value)) with domain "subject" or "value" (the latter prefixed "h:").
func TestHashDefinition(t *testing.T) {
	key := []byte(strings.Repeat("d", 40))
	h, err := privacy.NewHasher(key)
	if err != nil {
		t.Fatal(err)
	}
	mac := func(k []byte, parts ...string) []byte {
		m := hmac.New(sha256.New, k)
		m.Write([]byte(strings.Join(parts, "\x00")))
		return m.Sum(nil)
	}
	for _, tenant := range []string{"t1", "tenant-2"} {
		tk := mac(key, "campaignmesh privacy tenant", tenant)
		for _, v := range []string{"", "u1", strings.Repeat("long value ", 1000), "u1"} {
			if got, want := h.SubjectHash(tenant, v), hex.EncodeToString(mac(tk, "subject", v)); got != want {
				t.Errorf("SubjectHash(%s, %.10q) = %s, want %s", tenant, v, got, want)
			}
			if got, want := h.ValueHash(tenant, v), "h:"+hex.EncodeToString(mac(tk, "value", v)); got != want {
				t.Errorf("ValueHash(%s, %.10q) = %s, want %s", tenant, v, got, want)
			}
		}
	}
}
