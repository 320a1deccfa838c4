package ingest

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
)

func testHasher(t *testing.T) *privacy.Hasher {
	t.Helper()
	h, err := privacy.NewHasher([]byte(strings.Repeat("k", privacy.MinKeyBytes)))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// countingState is a privacy.View that counts the lookups of suppressed hashes.
type countingState struct {
	*privacy.View
	lookups atomic.Int64
}

func (c *countingState) Suppressed(tenant, hash string) bool {
	c.lookups.Add(1)
	return c.View.Suppressed(tenant, hash)
}

func subject(user, anon string, id string) *ingestv1.Event {
	return &ingestv1.Event{EventId: id, Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: user, AnonymousId: anon}
}

// Events whose user_id or anonymous_id the tenant suppressed are dropped before publish and
// counted as suppressed, neither accepted nor rejected; the same ids of another tenant are not.
// A request of only suppressed events publishes nothing and succeeds.
func TestSuppressedSubjectsAreDroppedBeforePublish(t *testing.T) {
	h := testHasher(t)
	view := privacy.NewView(nil)
	view.Apply(privacy.SuppressionKey("t1", h.SubjectHash("t1", "gone")), []byte("dsr_1"), false)
	view.Apply(privacy.SuppressionKey("t1", h.SubjectHash("t1", "anon-gone")), []byte("dsr_1"), false)
	rec := &recorder{}
	s := NewService(rec, DefaultLimits, DefaultRateLimits).WithPrivacy(Privacy{State: view, Hasher: h})
	ctx := context.Background()

	in := []*ingestv1.Event{subject("u1", "", "a"), subject("gone", "", "b"), subject("", "anon-gone", "c"),
		subject("u2", "anon-gone", "d"), subject("gone", "x", "e"), subject("u3", "a3", "f"), {EventId: "g", Type: ingestv1.EventType_EVENT_TYPE_CLICK}}
	res, err := s.Ingest(ctx, "t1", "k", in, 100)
	if err != nil || res.Suppressed != 4 || len(res.Accepted) != 2 || len(res.Rejected) != 1 {
		t.Fatalf("Ingest = accepted %d, suppressed %d, rejected %d, %v; want 2, 4, 1", len(res.Accepted), res.Suppressed, len(res.Rejected), err)
	}
	if len(rec.batches) != 1 || len(rec.batches[0].events) != 2 || rec.batches[0].events[0].GetEvent().GetEventId() != "a" ||
		rec.batches[0].events[1].GetEvent().GetEventId() != "f" {
		t.Fatalf("published %+v, want events a and f", rec.batches)
	}

	res, err = s.Ingest(ctx, "t1", "k", []*ingestv1.Event{subject("gone", "", "h"), subject("", "anon-gone", "i")}, 100)
	if err != nil || res.Suppressed != 2 || len(res.Accepted) != 0 || len(res.Rejected) != 0 {
		t.Fatalf("a wholly suppressed request: %+v, %v", res, err)
	}
	if rec.count() != 1 {
		t.Fatalf("a wholly suppressed request published: %d batches", rec.count())
	}

	res, err = s.Ingest(ctx, "t2", "k", []*ingestv1.Event{subject("gone", "anon-gone", "j")}, 100)
	if err != nil || res.Suppressed != 0 || len(res.Accepted) != 1 {
		t.Fatalf("another tenant's subject of the same id: %+v, %v", res, err)
	}
}

// A tenant without suppressions costs no lookups (and no hashing); a tenant with some costs one
// a distinct identifier.
func TestSuppressionLooksUpOnlyTenantsWithSuppressions(t *testing.T) {
	h := testHasher(t)
	state := &countingState{View: privacy.NewView(nil)}
	state.Apply(privacy.SuppressionKey("t1", h.SubjectHash("t1", "gone")), nil, false)
	s := NewService(&recorder{}, DefaultLimits, DefaultRateLimits).WithPrivacy(Privacy{State: state, Hasher: h})
	if _, err := s.Ingest(context.Background(), "t2", "k", []*ingestv1.Event{subject("u1", "a1", "a")}, 100); err != nil {
		t.Fatal(err)
	}
	if n := state.lookups.Load(); n != 0 {
		t.Fatalf("%d lookups for a tenant without suppressions", n)
	}
	if _, err := s.Ingest(context.Background(), "t1", "k", []*ingestv1.Event{subject("u1", "a1", "a"), subject("u2", "u2", "b")}, 100); err != nil {
		t.Fatal(err)
	}
	if n := state.lookups.Load(); n != 3 {
		t.Fatalf("%d lookups, want 3 (user and anonymous id, then one id used as both)", n)
	}
}

func props(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The tenant's policy is applied before publish: properties hashed (equal values equal, per
// tenant different, a non-string value by its JSON whatever the key order), dropped, kept or
// given the default action; IP truncated (v4 /24, v6 /48) or dropped; user agent dropped.
func TestPolicyIsAppliedBeforePublish(t *testing.T) {
	h := testHasher(t)
	view := privacy.NewView(nil)
	pii := privacy.Policy{Version: 1, PropertyRules: map[string]privacy.Action{"email": privacy.ActionHash, "plan": privacy.ActionHash,
		"address": privacy.ActionDrop, "page": privacy.ActionKeep}, IP: privacy.IPTruncate, UserAgent: privacy.UserAgentDrop}
	for _, tenant := range []string{"t1", "t2"} {
		view.Apply(privacy.PolicyKey(tenant), mustJSON(t, pii), false)
	}
	rec := &recorder{}
	s := NewService(rec, DefaultLimits, DefaultRateLimits).WithPrivacy(Privacy{State: view, Hasher: h})
	event := func(id, ip string, plan map[string]any) *ingestv1.Event {
		e := subject("u1", "", id)
		e.Properties = props(t, map[string]any{"email": "a@example.com", "plan": plan, "address": "1 Main St", "page": "/home", "other": 7.0})
		e.Context = &ingestv1.EventContext{Ip: ip, UserAgent: "Mozilla/5.0", Locale: "en-US"}
		return e
	}
	in := []*ingestv1.Event{
		event("a", "203.0.113.77", map[string]any{"tier": "pro", "seats": 3.0, "ids": []any{1.0, "x"}}),
		event("b", "2001:db8:1:2:3:4:5:6", map[string]any{"seats": 3.0, "ids": []any{1.0, "x"}, "tier": "pro"}),
		event("c", "::ffff:198.51.100.9", map[string]any{"tier": "free"}),
	}
	if _, err := s.Ingest(context.Background(), "t1", "k", in, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ingest(context.Background(), "t2", "k", []*ingestv1.Event{event("d", "not an address", map[string]any{"tier": "pro", "seats": 3.0, "ids": []any{1.0, "x"}})}, 100); err != nil {
		t.Fatal(err)
	}
	got := func(b, i int) *ingestv1.Event { return rec.batches[b].events[i].GetEvent() }
	field := func(e *ingestv1.Event, k string) string { return e.GetProperties().GetFields()[k].GetStringValue() }
	a, b, c, d := got(0, 0), got(0, 1), got(0, 2), got(1, 0)

	if want := h.ValueHash("t1", "a@example.com"); field(a, "email") != want || field(b, "email") != want {
		t.Errorf("email hashed as %q, %q; want %q", field(a, "email"), field(b, "email"), want)
	}
	if field(d, "email") == field(a, "email") || !strings.HasPrefix(field(d, "email"), privacy.HashedValuePrefix) {
		t.Errorf("email of another tenant hashed as %q (first tenant %q): want a different hash", field(d, "email"), field(a, "email"))
	}
	if want := h.ValueHash("t1", `{"ids":[1,"x"],"seats":3,"tier":"pro"}`); field(a, "plan") != want || field(b, "plan") != want {
		t.Errorf("an object hashed as %q and %q, want %q for both", field(a, "plan"), field(b, "plan"), want)
	}
	if field(c, "plan") == field(a, "plan") {
		t.Error("different objects hashed alike")
	}
	for _, e := range []*ingestv1.Event{a, b, c, d} {
		f := e.GetProperties().GetFields()
		if _, ok := f["address"]; ok {
			t.Errorf("event %s: dropped property kept", e.GetEventId())
		}
		if field(e, "page") != "/home" || f["other"].GetNumberValue() != 7 {
			t.Errorf("event %s: kept properties changed: %v", e.GetEventId(), f)
		}
		if e.GetContext().GetUserAgent() != "" || e.GetContext().GetLocale() != "en-US" {
			t.Errorf("event %s: context %v, want the user agent dropped and the locale kept", e.GetEventId(), e.GetContext())
		}
		if strings.Contains(string(mustProto(t, e)), "a@example.com") || strings.Contains(string(mustProto(t, e)), "Mozilla") {
			t.Errorf("event %s: a raw value reaches the stream", e.GetEventId())
		}
	}
	for e, want := range map[*ingestv1.Event]string{a: "203.0.113.0", b: "2001:db8:1::", c: "198.51.100.0", d: ""} {
		if e.GetContext().GetIp() != want {
			t.Errorf("event %s: IP %q, want %q", e.GetEventId(), e.GetContext().GetIp(), want)
		}
	}

	// IP dropped, every property dropped by default but one kept, and an action this ingest
	// does not know drops too.
	view.Apply(privacy.PolicyKey("t1"), mustJSON(t, privacy.Policy{Version: 2, IP: privacy.IPDrop, DefaultPropertyAction: privacy.ActionDrop,
		PropertyRules: map[string]privacy.Action{"page": privacy.ActionKeep, "plan": "scramble"}}), false)
	if _, err := s.Ingest(context.Background(), "t1", "k", []*ingestv1.Event{event("e", "203.0.113.77", map[string]any{"tier": "pro"})}, 100); err != nil {
		t.Fatal(err)
	}
	e := got(2, 0)
	if e.GetContext().GetIp() != "" || e.GetContext().GetUserAgent() != "Mozilla/5.0" || len(e.GetProperties().GetFields()) != 1 || field(e, "page") != "/home" {
		t.Errorf("IP dropped, default drop: event %v", e)
	}
}

// A tenant whose policy keeps everything has its events published exactly as sent.
func TestPolicyThatKeepsEverythingChangesNothing(t *testing.T) {
	h := testHasher(t)
	view := privacy.NewView(nil)
	view.Apply(privacy.PolicyKey("t1"), mustJSON(t, privacy.Policy{Version: 1, RetentionDays: 30, IP: privacy.IPKeep,
		PropertyRules: map[string]privacy.Action{"email": privacy.ActionKeep}}), false)
	rec := &recorder{}
	s := NewService(rec, DefaultLimits, DefaultRateLimits).WithPrivacy(Privacy{State: view, Hasher: h})
	for _, tenant := range []string{"t1", "t2"} {
		e := subject("u1", "", "a")
		e.Properties = props(t, map[string]any{"email": "a@example.com"})
		e.Context = &ingestv1.EventContext{Ip: "203.0.113.77", UserAgent: "Mozilla/5.0"}
		sent := proto.Clone(e)
		if _, err := s.Ingest(context.Background(), tenant, "k", []*ingestv1.Event{e}, 100); err != nil {
			t.Fatal(err)
		}
		if published := rec.batches[len(rec.batches)-1].events[0].GetEvent(); !proto.Equal(published, sent) {
			t.Errorf("tenant %s: published %v, sent %v", tenant, published, sent)
		}
	}
}

func mustJSON(t *testing.T, p privacy.Policy) []byte {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustProto(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
