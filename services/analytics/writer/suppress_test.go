package writer_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// subjectEvent is an event of tenant with a user and an anonymous id (either may be empty).
func subjectEvent(tenant, id, user, anon string) *ingestv1.AcceptedEvent {
	now := time.Now()
	return &ingestv1.AcceptedEvent{
		Event:    &ingestv1.Event{EventId: id, Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: user, AnonymousId: anon, CampaignId: "c1"},
		TenantId: tenant, ReceivedAt: timestamppb.New(now), CorrectedTime: timestamppb.New(now),
	}
}

// suppress puts the suppressions of tenant's values in the PRIVACY bucket, as dsr does, and
// returns the bucket's view, loaded.
func suppress(t *testing.T, s *streams, h *privacy.Hasher, tenant string, values ...string) *privacy.View {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := privacy.OpenBucket(ctx, s.admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range values {
		if err := privacy.PutSuppression(ctx, kv, tenant, h.SubjectHash(tenant, v), "dsr-1"); err != nil {
			t.Fatal(err)
		}
	}
	view, err := privacy.Watch(ctx, kv, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return view
}

// Events of a subject accepted before its suppression and still in the stream (the writer was
// stopped) never land once the subject is suppressed: matched by user id or by anonymous id,
// whole batches and the subject's rows within a batch shared with others; everyone else's
// rows land, the same user id of another tenant included. A crash between the insert and the
// acks redelivers the set: the dropped rows are dropped again, nothing lands twice.
func TestWriterDropsSuppressedSubjectsInTheStream(t *testing.T) {
	p := newPipeline(t)
	key := make([]byte, privacy.MinKeyBytes)
	_, _ = rand.Read(key)
	h, err := privacy.NewHasher(key)
	if err != nil {
		t.Fatal(err)
	}
	// In the stream while no writer runs.
	p.publishEvents(t, "t1", "gone-1", subjectEvent("t1", "g1", "gone", ""), subjectEvent("t1", "g2", "gone", ""), subjectEvent("t1", "g3", "gone", "anon-x"))
	p.publishEvents(t, "t1", "anon-1", subjectEvent("t1", "a1", "", "anon-gone"), subjectEvent("t1", "a2", "", "anon-gone"))
	p.publishEvents(t, "t1", "linked-1", subjectEvent("t1", "l1", "linked", "anon-gone")) // the anonymous id is suppressed
	p.publishEvents(t, "t1", "stay-1", subjectEvent("t1", "s1", "stay", ""), subjectEvent("t1", "s2", "stay", "anon-y"),
		subjectEvent("t1", "s3", "stay", ""), subjectEvent("t1", "s4", "stay", ""))
	p.publishEvents(t, "t1", "mixed-1", subjectEvent("t1", "m1", "gone", ""), subjectEvent("t1", "m2", "stay", ""), // two partitions: events.t1
		subjectEvent("t1", "m3", "gone", ""), subjectEvent("t1", "m4", "other", ""))
	p.publishEvents(t, "t2", "t2-1", subjectEvent("t2", "o1", "gone", ""), subjectEvent("t2", "o2", "", "anon-gone"))
	const dropped, landed = 3 + 2 + 1 + 2, 4 + 2 + 2

	p.opts = []writer.Option{writer.WithSuppression(suppress(t, p.streams, h, "t1", "gone", "anon-gone"), h)}
	// The erasure's completion condition: the stream drained through what it held once the
	// suppression was in force (read as the analytics user).
	ctx := context.Background()
	seq, err := writer.StreamSeq(ctx, p.writerJS)
	if err != nil || seq == 0 {
		t.Fatalf("StreamSeq = %d, %v", seq, err)
	}
	if drained, err := writer.Drained(ctx, p.writerJS, seq); err != nil || drained {
		t.Fatalf("Drained before any writer ran = %v, %v; want false", drained, err)
	}
	// The first writer inserts the set and dies before acknowledging it.
	done, _ := p.start(t, 1)
	waitDone(t, done)
	reg := prometheus.NewRegistry()
	p.reg = reg
	p.start(t, 0)
	p.drained(t)
	p.settle(t)
	if drained, err := writer.Drained(ctx, p.writerJS, seq); err != nil || !drained {
		t.Errorf("Drained after the writer acknowledged everything = %v, %v; want true", drained, err)
	}

	if n := p.count(t, `SELECT count() FROM events WHERE tenant_id = 't1' AND (user_id = 'gone' OR anonymous_id = 'anon-gone')`); n != 0 {
		t.Errorf("%d rows of the suppressed subject landed", n)
	}
	if n := p.count(t, `SELECT count() FROM events WHERE tenant_id != ''`); n != landed {
		t.Errorf("%d rows landed, want %d", n, landed)
	}
	if n := p.count(t, `SELECT count() FROM events WHERE tenant_id = 't2'`); n != 2 {
		t.Errorf("%d rows of tenant t2 landed, want its 2 (its subjects are not suppressed)", n)
	}
	if n := p.count(t, `SELECT uniqExact(event_id) FROM events WHERE tenant_id = 't1'`); n != landed-2 {
		t.Errorf("%d events of t1 landed, want %d", n, landed-2)
	}
	if n := p.count(t, `SELECT countMerge(events) FROM events_hourly`); n != landed {
		t.Errorf("rollup counts %d events, want %d", n, landed)
	}
	// The redelivered set is dropped again before anything else: the second writer counts
	// every suppressed row too.
	if n := testutil.ToFloat64(counter(t, reg, "writer_suppressed_rows_total")); n != dropped {
		t.Errorf("writer_suppressed_rows_total = %v, want %d", n, dropped)
	}
}

// counter returns the registered collector named name.
func counter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: "copy"}, func() float64 { return mf.GetMetric()[0].GetCounter().GetValue() })
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}
