package ingest

import (
	"context"
	"fmt"
	"sync"
	"testing"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
)

// identifyRecorder keeps the identify copies (the identify stream itself is exercised against a
// real JetStream server in services/delivery/app); fail, when set, is returned instead. log,
// shared with the event stream's recorder, says in which order the two were stored.
type identifyRecorder struct {
	mu     sync.Mutex
	copies []published
	fail   error
	log    *[]string
}

func (r *identifyRecorder) PublishIdentify(_ context.Context, tenant, msgID string, events []*ingestv1.AcceptedEvent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.copies = append(r.copies, published{tenant, msgID, events})
	*r.log = append(*r.log, "identify "+msgID)
	return nil
}

// orderedRecorder is the event stream's recorder noting each stored batch in log.
type orderedRecorder struct {
	recorder
	log *[]string
}

func (r *orderedRecorder) Publish(ctx context.Context, tenant, batchID string, batch []*ingestv1.AcceptedEvent) error {
	if err := r.recorder.Publish(ctx, tenant, batchID, batch); err != nil {
		return err
	}
	*r.log = append(*r.log, "events "+batchID)
	return nil
}

func identifyEvent(id, user string) *ingestv1.Event {
	return &ingestv1.Event{EventId: id, Type: ingestv1.EventType_EVENT_TYPE_IDENTIFY, UserId: user}
}

// An accepted batch's identify events, and only they, are copied once the batch is stored in
// the event stream, under the batch's id with .identify; a suppressed subject's identify and
// rejected identify events are not copied; a batch without identify events makes no copy.
func TestIdentifyEventsAreCopiedAfterTheBatchIsStored(t *testing.T) {
	h := testHasher(t)
	view := privacy.NewView(nil)
	view.Apply(privacy.SuppressionKey("t1", h.SubjectHash("t1", "gone")), []byte("dsr_1"), false)
	var log []string
	events := &orderedRecorder{log: &log}
	copies := &identifyRecorder{log: &log}
	s := NewService(events, DefaultLimits, DefaultRateLimits).WithPrivacy(Privacy{State: view, Hasher: h}).WithIdentify(copies)
	ctx := context.Background()

	in := []*ingestv1.Event{identifyEvent("a", "u1"), ev("b"), identifyEvent("c", "gone"), identifyEvent("d", "u2"),
		{EventId: "e", Type: ingestv1.EventType_EVENT_TYPE_IDENTIFY}} // e: no subject, rejected
	res, err := s.Ingest(ctx, "t1", "k", in, 100)
	if err != nil || len(res.Accepted) != 3 || res.Suppressed != 1 || len(res.Rejected) != 1 {
		t.Fatalf("Ingest = accepted %d, suppressed %d, rejected %d, %v; want 3, 1, 1", len(res.Accepted), res.Suppressed, len(res.Rejected), err)
	}
	id := batchID("t1", res.Accepted)
	if len(copies.copies) != 1 {
		t.Fatalf("%d identify copies, want 1", len(copies.copies))
	}
	c := copies.copies[0]
	if c.tenant != "t1" || c.id != id+".identify" || len(c.events) != 2 || c.events[0].GetEvent().GetEventId() != "a" ||
		c.events[1].GetEvent().GetEventId() != "d" || c.events[0].GetTenantId() != "t1" || c.events[0].GetReceivedAt() == nil {
		t.Fatalf("identify copy %+v, want events a and d of t1 under %s.identify", c, id)
	}
	if want := fmt.Sprint([]string{"events " + id, "identify " + id + ".identify"}); fmt.Sprint(log) != want {
		t.Fatalf("stored in the order %v, want %s", log, want)
	}

	if _, err := s.Ingest(ctx, "t1", "k", evs("f", "g"), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ingest(ctx, "t1", "k", []*ingestv1.Event{identifyEvent("h", "gone")}, 100); err != nil {
		t.Fatal(err)
	}
	if len(copies.copies) != 1 || events.count() != 2 {
		t.Fatalf("batches without (unsuppressed) identify events: %d copies, %d batches; want 1, 2", len(copies.copies), events.count())
	}
}

// A failure to store the identify copy fails the request as the event stream's unavailability
// does, so the client resends: the resent batch goes to the event stream under the same batch
// id (a duplicate the stream drops) and its copy under the same message id. A batch the event
// stream refused makes no copy.
func TestIdentifyCopyFailureFailsTheRequest(t *testing.T) {
	var log []string
	events := &orderedRecorder{log: &log}
	copies := &identifyRecorder{log: &log, fail: fmt.Errorf("%w: nats down", ErrStreamUnavailable)}
	s := NewService(events, DefaultLimits, DefaultRateLimits).WithIdentify(copies)
	ctx := context.Background()
	in := []*ingestv1.Event{identifyEvent("a", "u1"), ev("b")}

	_, err := s.Ingest(ctx, "t1", "k", in, 100)
	if e := appErr(t, err); e.Code != apperr.Unavailable || e.Reason != "STREAM_UNAVAILABLE" || e.RetryAfter == 0 {
		t.Fatalf("Ingest with the copy failing = %+v, want STREAM_UNAVAILABLE with a retry delay", e)
	}
	copies.mu.Lock()
	copies.fail = nil
	copies.mu.Unlock()
	res, err := s.Ingest(ctx, "t1", "k", in, 100)
	if err != nil || len(res.Accepted) != 2 {
		t.Fatalf("the resent request: %+v, %v", res, err)
	}
	id := batchID("t1", res.Accepted)
	if len(events.batches) != 2 || events.batches[0].id != id || events.batches[1].id != id {
		t.Fatalf("event stream batches %+v, want the same batch id %s twice", events.batches, id)
	}
	if len(copies.copies) != 1 || copies.copies[0].id != id+".identify" {
		t.Fatalf("identify copies %+v, want one under %s.identify", copies.copies, id)
	}

	events.fail = ErrStreamFull
	if _, err := s.Ingest(ctx, "t1", "k", []*ingestv1.Event{identifyEvent("c", "u3")}, 100); appErr(t, err).Code != apperr.ResourceExhausted {
		t.Fatalf("a refused batch: %v", err)
	}
	if len(copies.copies) != 1 {
		t.Fatalf("a batch the event stream refused was copied: %d copies", len(copies.copies))
	}
}
