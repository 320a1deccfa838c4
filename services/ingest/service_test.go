package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// recorder is a Publisher that keeps what it is asked to publish (the stream itself is
// exercised in services/ingest/natsjs and grpcapi against a real JetStream server); fail, when
// set, is returned instead.
type recorder struct {
	mu      sync.Mutex
	batches []published
	fail    error
}

type published struct {
	tenant, id string
	events     []*ingestv1.AcceptedEvent
}

func (r *recorder) Publish(_ context.Context, tenant, batchID string, batch []*ingestv1.AcceptedEvent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.batches = append(r.batches, published{tenant, batchID, batch})
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.batches)
}

func evs(ids ...string) []*ingestv1.Event {
	out := make([]*ingestv1.Event, len(ids))
	for i, id := range ids {
		out[i] = ev(id)
	}
	return out
}

func appErr(t *testing.T, err error) *apperr.Error {
	t.Helper()
	var e *apperr.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not a domain error", err)
	}
	return e
}

func TestIngestPublishesTheAcceptedEventsAsOneBatch(t *testing.T) {
	rec := &recorder{}
	s := NewService(rec, DefaultLimits, DefaultRateLimits)
	in := append(evs("a", "b"), &ingestv1.Event{EventId: "c", Type: ingestv1.EventType_EVENT_TYPE_CLICK})
	res, err := s.Ingest(context.Background(), "tenant-1", "key-1", in, 100)
	if err != nil || len(res.Accepted) != 2 || len(res.Rejected) != 1 || res.Rejected[0].GetIndex() != 2 {
		t.Fatalf("Ingest = %+v, %v", res, err)
	}
	if len(rec.batches) != 1 {
		t.Fatalf("%d batches published, want 1", len(rec.batches))
	}
	b := rec.batches[0]
	if b.tenant != "tenant-1" || len(b.events) != 2 || b.events[0].GetTenantId() != "tenant-1" || b.events[0].GetSource() != "key-1" ||
		b.events[1].GetEvent().GetEventId() != "b" || b.id != batchID("tenant-1", res.Accepted) {
		t.Fatalf("published %+v", b)
	}
}

// A request with nothing valid publishes nothing and spends no rate; a request over the batch
// limits is refused whole.
func TestIngestPublishesNothingWhenNothingIsAccepted(t *testing.T) {
	rec := &recorder{}
	s := NewService(rec, DefaultLimits, RateLimits{PerTenant: 1, PerSource: 1})
	invalid := &ingestv1.Event{EventId: "x", Type: ingestv1.EventType_EVENT_TYPE_CLICK} // no subject
	for range 5 {
		res, err := s.Ingest(context.Background(), "t", "k", []*ingestv1.Event{invalid, invalid}, 100)
		if err != nil || len(res.Accepted) != 0 || len(res.Rejected) != 2 {
			t.Fatalf("invalid events: %+v, %v", res, err)
		}
	}
	if _, err := s.Ingest(context.Background(), "t", "k", evs("a", "b"), 100); err != nil {
		t.Fatalf("rejected events spent the rate: %v", err)
	}
	many := make([]*ingestv1.Event, 1001)
	for i := range many {
		many[i] = ev(fmt.Sprintf("m%d", i))
	}
	_, err := s.Ingest(context.Background(), "t", "k", many, 100)
	if e := appErr(t, err); e.Code != apperr.Invalid || len(e.Violations) != 1 || e.Violations[0].Field != "events" {
		t.Fatalf("1,001 events: %+v", e)
	}
	if n := rec.count(); n != 1 {
		t.Fatalf("%d batches published, want only the valid request's", n)
	}
}

func TestDefaultRateLimits(t *testing.T) {
	if DefaultRateLimits != (RateLimits{PerTenant: 200000, PerSource: 100000}) {
		t.Fatalf("DefaultRateLimits = %+v, want 200,000/s a tenant and 100,000/s a source", DefaultRateLimits)
	}
}

// Each tenant and each source (API key or user) has a bucket of twice its rate; over it the
// request is refused with RATE_LIMITED and how long to wait, and nothing is published.
func TestRateLimitsPerTenantAndPerSource(t *testing.T) {
	rec := &recorder{}
	// Buckets: 4 events a tenant, 2 a source, refilled in seconds (the test takes microseconds).
	s := NewService(rec, DefaultLimits, RateLimits{PerTenant: 2, PerSource: 1})
	ctx := context.Background()
	limited := func(t *testing.T, err error, maxWait time.Duration) {
		t.Helper()
		e := appErr(t, err)
		if e.Code != apperr.ResourceExhausted || e.Reason != "RATE_LIMITED" || e.RetryAfter <= 0 || e.RetryAfter > maxWait {
			t.Fatalf("over the limit: %+v, want RESOURCE_EXHAUSTED RATE_LIMITED retrying within %s", e, maxWait)
		}
	}
	_, err := s.Ingest(ctx, "t0", "a", evs("a1", "a2", "a3"), 100)
	limited(t, err, time.Second) // more than the source's whole bucket: retry in a second
	if _, err := s.Ingest(ctx, "t1", "a", evs("a1", "a2"), 100); err != nil {
		t.Fatalf("source a within its burst: %v", err)
	}
	_, err = s.Ingest(ctx, "t1", "a", evs("a3"), 100)
	limited(t, err, time.Second) // one event at 1/s
	// The refusal above came from the source's bucket, after the tenant's had given one event.
	if _, err := s.Ingest(ctx, "t1", "b", evs("b1"), 100); err != nil {
		t.Fatalf("source b, tenant within its burst: %v", err)
	}
	_, err = s.Ingest(ctx, "t1", "c", evs("c1"), 100)
	limited(t, err, 500*time.Millisecond) // the tenant's bucket is empty: one event at 2/s
	// Another tenant has its own bucket.
	if _, err := s.Ingest(ctx, "t2", "d", evs("d1", "d2"), 100); err != nil {
		t.Fatalf("another tenant: %v", err)
	}
	if n := rec.count(); n != 3 {
		t.Fatalf("%d batches published, want the 3 allowed", n)
	}
}

func TestPublishErrorsTellSendersWhatToDo(t *testing.T) {
	other := errors.New("publish batch: something else")
	tests := []struct {
		name   string
		fail   error
		code   apperr.Code
		reason string
		retry  time.Duration
	}{
		{"stream full", fmt.Errorf("%w: maximum bytes exceeded", ErrStreamFull), apperr.ResourceExhausted, "STREAM_FULL", 5 * time.Second},
		{"stream unavailable", fmt.Errorf("%w: nats: connection closed", ErrStreamUnavailable), apperr.Unavailable, "STREAM_UNAVAILABLE", time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewService(&recorder{fail: tt.fail}, DefaultLimits, DefaultRateLimits)
			_, err := s.Ingest(context.Background(), "t", "k", evs("a"), 100)
			if e := appErr(t, err); e.Code != tt.code || e.Reason != tt.reason || e.RetryAfter != tt.retry {
				t.Fatalf("got %+v, want %v %s retry %s", e, tt.code, tt.reason, tt.retry)
			}
		})
	}
	s := NewService(&recorder{fail: other}, DefaultLimits, DefaultRateLimits)
	if _, err := s.Ingest(context.Background(), "t", "k", evs("a"), 100); !errors.Is(err, other) {
		t.Fatalf("any other error: %v, want it as it is (an internal error to the caller)", err)
	}
}

// The batch id depends on the tenant and the event ids in order, and on nothing else, so a
// resent batch is a duplicate and no two different batches share an id.
func TestBatchID(t *testing.T) {
	accepted := func(tenant string, ids ...string) []*ingestv1.AcceptedEvent {
		r, err := DefaultLimits.Prepare(evs(ids...), tenant, "k", time.Now(), 100)
		if err != nil || len(r.Rejected) != 0 {
			t.Fatal(err, r.Rejected)
		}
		return r.Accepted
	}
	base := batchID("t", accepted("t", "a", "b"))
	later := accepted("t", "a", "b")
	later[0].Source, later[0].Event.UserId = "other-key", "other-user"
	if batchID("t", later) != base {
		t.Error("the same event ids resent (other time, source, fields) got another batch id")
	}
	for name, other := range map[string]string{
		"other tenant":    batchID("u", accepted("u", "a", "b")),
		"other order":     batchID("t", accepted("t", "b", "a")),
		"ids split apart": batchID("t", accepted("t", "ab")),
		"one id more":     batchID("t", accepted("t", "a", "b", "c")),
	} {
		if other == base {
			t.Errorf("%s: same batch id", name)
		}
	}
}
