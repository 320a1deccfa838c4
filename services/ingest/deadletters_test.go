package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
)

// deadRecorder is a DeadLetters that keeps what it is asked to keep (the dead-letter stream
// itself is exercised in services/ingest/natsjs against a real JetStream server); fail, when
// set, is returned instead.
type deadRecorder struct {
	mu      sync.Mutex
	kept    []kept
	fail    error
	tenants []string
}

type kept struct {
	events  []*ingestv1.AcceptedEvent
	reasons []string
}

func (d *deadRecorder) Keep(_ context.Context, tenant string, events []*ingestv1.AcceptedEvent, reasons []string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail != nil {
		return d.fail
	}
	d.kept = append(d.kept, kept{events, reasons})
	d.tenants = append(d.tenants, tenant)
	return nil
}

// Every rejected event is kept with the field and reason of its rejection, whether others of
// its request were accepted or not; events of a request refused whole are not (the caller was
// told the whole request failed).
func TestRejectedEventsAreDeadLetteredWithTheirReasons(t *testing.T) {
	rec, dead := &recorder{}, &deadRecorder{}
	s := NewService(rec, DefaultLimits, DefaultRateLimits).WithDeadLetters(dead)
	ctx := context.Background()
	noSubject := &ingestv1.Event{EventId: "x", Type: ingestv1.EventType_EVENT_TYPE_CLICK}
	noName := &ingestv1.Event{EventId: "y", Type: ingestv1.EventType_EVENT_TYPE_TRACK, UserId: "u"}
	res, err := s.Ingest(ctx, "t1", "key-1", []*ingestv1.Event{ev("a"), noSubject, ev("a"), noName}, 100)
	if err != nil || len(res.Accepted) != 1 || len(res.Rejected) != 3 {
		t.Fatalf("Ingest = %+v, %v", res, err)
	}
	if len(dead.kept) != 1 || dead.tenants[0] != "t1" {
		t.Fatalf("kept %+v for %v, want one request's rejected events for t1", dead.kept, dead.tenants)
	}
	k := dead.kept[0]
	want := []struct{ id, reason string }{
		{"x", "events[1].user_id: user_id or anonymous_id is required"},
		{"a", "events[2].event_id: repeats an event_id earlier in this batch"},
		{"y", "events[3].name: is required for track and conversion events"},
	}
	if len(k.events) != len(want) || len(k.reasons) != len(want) {
		t.Fatalf("kept %d events, %d reasons; want %d", len(k.events), len(k.reasons), len(want))
	}
	for i, w := range want {
		e := k.events[i]
		if e.GetEvent().GetEventId() != w.id || k.reasons[i] != w.reason || e.GetTenantId() != "t1" || e.GetSource() != "key-1" || e.GetReceivedAt() == nil {
			t.Errorf("dead letter %d = %v %q, want %s %q", i, e, k.reasons[i], w.id, w.reason)
		}
	}

	// Only rejected events: kept, nothing published.
	if _, err := s.Ingest(ctx, "t1", "key-1", []*ingestv1.Event{noSubject}, 100); err != nil || len(dead.kept) != 2 || rec.count() != 1 {
		t.Fatalf("a request of one rejected event: %v, kept %d, published %d", err, len(dead.kept), rec.count())
	}
	// Refused whole: nothing kept.
	many := make([]*ingestv1.Event, 1001)
	for i := range many {
		many[i] = noSubject
	}
	if _, err := s.Ingest(ctx, "t1", "key-1", many, 100); err == nil || len(dead.kept) != 2 {
		t.Fatalf("a request refused whole: %v, kept %d", err, len(dead.kept))
	}
}

// Kept events spend the caller's rate like accepted ones, so a sender of invalid events cannot
// fill the dead-letter stream faster than it could send valid ones.
func TestDeadLettersSpendRate(t *testing.T) {
	dead := &deadRecorder{}
	s := NewService(&recorder{}, DefaultLimits, RateLimits{PerTenant: 1, PerSource: 1}).WithDeadLetters(dead)
	invalid := &ingestv1.Event{EventId: "x", Type: ingestv1.EventType_EVENT_TYPE_CLICK}
	var limited error
	for i := range 5 {
		if _, err := s.Ingest(context.Background(), "t", "k", []*ingestv1.Event{invalid}, 100); err != nil {
			limited = err
			break
		} else if i == 4 {
			t.Fatal("5 rejected events in a row within a rate of 1/s (burst 2) were all kept")
		}
	}
	if e := appErr(t, limited); e.Code != apperr.ResourceExhausted || e.Reason != "RATE_LIMITED" {
		t.Fatalf("over the rate: %+v", e)
	}
	if len(dead.kept) != 2 {
		t.Fatalf("%d requests kept, want the burst of 2", len(dead.kept))
	}
}

// A rejected event of a suppressed data subject is dropped like an accepted one, and the
// tenant's policy applies to the kept ones as to stored events: no raw value the policy
// hashes or drops reaches the dead letters.
func TestDeadLettersFollowThePrivacyRules(t *testing.T) {
	h := testHasher(t)
	view := privacy.NewView(nil)
	view.Apply(privacy.SuppressionKey("t1", h.SubjectHash("t1", "gone")), []byte("dsr_1"), false)
	view.Apply(privacy.PolicyKey("t1"), mustJSON(t, privacy.Policy{Version: 1,
		PropertyRules: map[string]privacy.Action{"email": privacy.ActionHash, "address": privacy.ActionDrop}, IP: privacy.IPDrop}), false)
	dead := &deadRecorder{}
	s := NewService(&recorder{}, DefaultLimits, DefaultRateLimits).WithPrivacy(Privacy{State: view, Hasher: h}).WithDeadLetters(dead)
	bad := func(user, id string) *ingestv1.Event { // a track without a name
		e := subject(user, "", id)
		e.Type = ingestv1.EventType_EVENT_TYPE_TRACK
		e.Properties = props(t, map[string]any{"email": "a@example.com", "address": "1 Main St"})
		e.Context = &ingestv1.EventContext{Ip: "203.0.113.7"}
		return e
	}
	if _, err := s.Ingest(context.Background(), "t1", "k", []*ingestv1.Event{bad("gone", "a"), bad("u1", "b")}, 100); err != nil {
		t.Fatal(err)
	}
	if len(dead.kept) != 1 || len(dead.kept[0].events) != 1 {
		t.Fatalf("kept %+v, want only u1's event", dead.kept)
	}
	e := dead.kept[0].events[0].GetEvent()
	f := e.GetProperties().GetFields()
	if e.GetUserId() != "u1" || f["email"].GetStringValue() == "a@example.com" || f["email"] == nil || f["address"] != nil || e.GetContext().GetIp() != "" {
		t.Fatalf("kept event %v: the policy was not applied", e)
	}
}

// A dead letter that cannot be stored fails the request as the stream does (the caller resends;
// its accepted events, already stored, are kept once by their ids downstream), and the
// rejections are counted by field and reason either way.
func TestDeadLetterFailureFailsTheRequest(t *testing.T) {
	rec := &recorder{}
	dead := &deadRecorder{fail: fmt.Errorf("publish: %w", ErrStreamUnavailable)}
	s := NewService(rec, DefaultLimits, DefaultRateLimits).WithDeadLetters(dead)
	_, err := s.Ingest(context.Background(), "t", "k", []*ingestv1.Event{ev("a"), {EventId: "x", Type: ingestv1.EventType_EVENT_TYPE_CLICK}}, 100)
	if e := appErr(t, err); e.Code != apperr.Unavailable || e.Reason != "STREAM_UNAVAILABLE" || e.RetryAfter <= 0 {
		t.Fatalf("dead letters unavailable: %+v", e)
	}
	if !errors.Is(dead.fail, ErrStreamUnavailable) || rec.count() != 1 {
		t.Fatalf("published %d, want the accepted event stored before the dead letter", rec.count())
	}
}
