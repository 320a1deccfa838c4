package natsjs_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/services/ingest"
	ingestjs "github.com/campaignmesh/campaignmesh/services/ingest/natsjs"
)

func streamOf(t testing.TB, url string, cfg natsjs.StreamConfig) jetstream.JetStream {
	t.Helper()
	nc, js, err := natsjs.Connect(url, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if err := natsjs.EnsureStreams(context.Background(), js, cfg); err != nil {
		t.Fatal(err)
	}
	return js
}

func batch(tenant string, ids ...string) []*ingestv1.AcceptedEvent {
	out := make([]*ingestv1.AcceptedEvent, len(ids))
	for i, id := range ids {
		out[i] = &ingestv1.AcceptedEvent{TenantId: tenant, ReceivedAt: timestamppb.Now(), CorrectedTime: timestamppb.Now(),
			Event: &ingestv1.Event{EventId: id, Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: "u"}}
	}
	return out
}

// A batch of one partition is one message on the partition's subject carrying the caller's
// trace context, with the batch id and partition as message id; the same batch again is a
// duplicate the stream drops.
func TestPublishStoresTheBatchWithItsTraceContext(t *testing.T) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	js := streamOf(t, natstest.Start(t), natsjs.DefaultStream)
	reg := prometheus.NewRegistry()
	p := ingestjs.NewPublisher(js, reg)
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	if err := p.Publish(ctx, "tenant-1", "batch-1", batch("tenant-1", "a", "b")); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, "tenant-1", "batch-1", batch("tenant-1", "a", "b")); err != nil {
		t.Fatalf("the same batch again: %v", err)
	}
	s, err := js.Stream(context.Background(), natsjs.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil || info.State.Msgs != 1 {
		t.Fatalf("stream holds %v batches (%v), want 1", info.State.Msgs, err)
	}
	msg, err := s.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := natsjs.DecodeBatch(msg.Data)
	p1 := natsjs.Partition("tenant-1", "u")
	if err != nil || len(b.GetEvents()) != 2 || b.GetEvents()[1].GetTenantId() != "tenant-1" || msg.Subject != natsjs.Subject("tenant-1", p1) ||
		msg.Header.Get(jetstream.MsgIDHeader) != fmt.Sprintf("batch-1.%d", p1) {
		t.Fatalf("stored %v on %s with id %q (%v)", b.GetEvents(), msg.Subject, msg.Header.Get(jetstream.MsgIDHeader), err)
	}
	if tp := http.Header(msg.Header).Get("traceparent"); !strings.Contains(tp, sc.TraceID().String()) {
		t.Fatalf("traceparent %q does not carry the caller's trace %s", tp, sc.TraceID())
	}
	// Both publishes were stored as far as the caller knows (the second as a duplicate).
	if n := counter(t, reg, "ingest_events_accepted_total"); n != 4 {
		t.Errorf("ingest_events_accepted_total = %v, want 4", n)
	}
}

// counter is the value of the counter name in reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("%s not registered", name)
	return 0
}

// The stream's refusals are the domain's errors, so ingest answers with what a sender can act on.
func TestPublishErrorsAreTheDomains(t *testing.T) {
	t.Run("stream full", func(t *testing.T) {
		tiny := natsjs.DefaultStream
		tiny.MaxBytes = 64 << 10
		p := ingestjs.NewPublisher(streamOf(t, natstest.Start(t), tiny), nil)
		var err error
		for i := 0; i < 100 && err == nil; i++ {
			ids := make([]string, 100)
			for j := range ids {
				ids[j] = fmt.Sprintf("full-%d-%d", i, j)
			}
			err = p.Publish(context.Background(), "t", fmt.Sprint(i), batch("t", ids...))
		}
		if !errors.Is(err, ingest.ErrStreamFull) {
			t.Fatalf("with the stream full: %v, want ingest.ErrStreamFull", err)
		}
	})
	t.Run("nats down", func(t *testing.T) {
		ns := natstest.StartServer(t)
		p := ingestjs.NewPublisher(streamOf(t, ns.ClientURL(), natsjs.DefaultStream), nil)
		ns.Shutdown()
		if err := p.Publish(context.Background(), "t", "late", batch("t", "late")); !errors.Is(err, ingest.ErrStreamUnavailable) {
			t.Fatalf("with NATS down: %v, want ingest.ErrStreamUnavailable", err)
		}
	})
}

// The outage budget: by default the stream holds at least 10 minutes of ClickHouse outage at
// the bench's landed rate (make bench-ingest, steady run: 95,000 events/s in 100-event
// requests), with a quarter to spare, counting the bytes JetStream counts against MaxBytes for
// what this publisher stores (data, headers with a trace context, subject, record).
func TestDefaultStreamHoldsTenMinutesAtTheBenchRate(t *testing.T) {
	const (
		benchRate = 95000 // events/s
		outage    = 10 * time.Minute
		batches   = 20
	)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	js := streamOf(t, natstest.Start(t), natsjs.DefaultStream)
	p := ingestjs.NewPublisher(js, nil)
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	for i := range batches {
		// As ingest accepts cmd/bench-ingest's request(): the client's clock trusted.
		received := time.Now()
		sent := timestamppb.New(received.Add(-3 * time.Millisecond))
		events := make([]*ingestv1.Event, 100)
		for j := range events {
			events[j] = &ingestv1.Event{EventId: fmt.Sprintf("s-%d-%d-%d", i%16, 50000+i, j), Type: ingestv1.EventType_EVENT_TYPE_IMPRESSION,
				UserId: fmt.Sprintf("user-%d", j), CampaignId: "bench", Variant: "a", Timestamp: sent}
		}
		res, err := ingest.DefaultLimits.Prepare(events, "bench", "bench", received, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Publish(ctx, "bench", fmt.Sprint(i), res.Accepted); err != nil {
			t.Fatal(err)
		}
	}
	s, err := js.Stream(context.Background(), natsjs.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	perEvent := float64(info.State.Bytes) / (batches * 100)
	holds := time.Duration(float64(natsjs.DefaultStream.MaxBytes) / (perEvent * benchRate) * float64(time.Second))
	t.Logf("%.1f bytes an event counted against MaxBytes: the default %d bytes hold %s at %d events/s", perEvent, natsjs.DefaultStream.MaxBytes, holds.Round(time.Second), benchRate)
	if holds < outage*5/4 {
		t.Fatalf("the default stream holds %s of outage at %d events/s (%.1f bytes an event); want at least %s with a quarter to spare",
			holds.Round(time.Second), benchRate, perEvent, outage)
	}
}

// storedMsg is a message of the stream, its events decoded.
type storedMsg struct {
	subject, id string
	events      []*ingestv1.AcceptedEvent
	size        int // the batch's bytes before compression
}

// storedMessages are the messages the stream holds, in order.
func storedMessages(t *testing.T, js jetstream.JetStream) []storedMsg {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, natsjs.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []storedMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		b, err := natsjs.DecodeBatch(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := s2.Decode(nil, m.Data[1:])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, storedMsg{m.Subject, m.Header.Get(jetstream.MsgIDHeader), b.GetEvents(), len(plain)})
	}
	return out
}

// request is caller's call-th request: 100 events of 37 users and, every fifth, of an
// anonymous visitor.
func request(tenant string, caller, call int) []*ingestv1.AcceptedEvent {
	out := make([]*ingestv1.AcceptedEvent, 100)
	for i := range out {
		e := &ingestv1.Event{EventId: fmt.Sprintf("c%d-r%d-e%d", caller, call, i), Type: ingestv1.EventType_EVENT_TYPE_CLICK}
		if i%5 == 4 {
			e.AnonymousId = fmt.Sprintf("anon-%d-%d", caller, i)
		} else {
			e.UserId = fmt.Sprintf("user-%d", (caller*7+i)%37)
		}
		out[i] = &ingestv1.AcceptedEvent{Event: e, TenantId: tenant, Source: fmt.Sprint("key-", caller), ReceivedAt: timestamppb.Now(), CorrectedTime: timestamppb.Now()}
	}
	return out
}

func partitionOf(tenant string, e *ingestv1.AcceptedEvent) int {
	subject := e.GetEvent().GetUserId()
	if subject == "" {
		subject = e.GetEvent().GetAnonymousId()
	}
	return natsjs.Partition(tenant, subject)
}

// checkPartitions fails t unless every message is on events.<tenant>.<p> and holds only
// events of partition p, and returns how often each event id was stored.
func checkPartitions(t *testing.T, tenant string, msgs []storedMsg) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for _, m := range msgs {
		mt, p, ok := natsjs.ParseSubject(m.subject)
		if !ok || mt != tenant || p < 0 {
			t.Fatalf("message on %q, want events.%s.<partition>", m.subject, tenant)
		}
		for _, e := range m.events {
			if got := partitionOf(tenant, e); got != p || e.GetTenantId() != tenant {
				t.Fatalf("event %s of partition %d (tenant %q) in a message on %s", e.GetEvent().GetEventId(), got, e.GetTenantId(), m.subject)
			}
			seen[e.GetEvent().GetEventId()]++
		}
	}
	return seen
}

// One request's events go to their partitions' subjects, one message a partition, each with
// the batch id and partition as message id and the request's order; the request resent is
// dropped as duplicates.
func TestPublishSplitsARequestByPartition(t *testing.T) {
	js := streamOf(t, natstest.Start(t), natsjs.DefaultStream)
	p := ingestjs.NewPublisher(js, nil)
	ctx := context.Background()
	req := request("t", 0, 0)
	if err := p.Publish(ctx, "", "batch-0", req); err == nil {
		t.Fatal("published a batch without a tenant")
	}
	if err := p.Publish(ctx, "t", "batch-1", req); err != nil {
		t.Fatal(err)
	}
	msgs := storedMessages(t, js)
	seen := checkPartitions(t, "t", msgs)
	want := map[int][]string{}
	for _, e := range req {
		want[partitionOf("t", e)] = append(want[partitionOf("t", e)], e.GetEvent().GetEventId())
	}
	if len(msgs) != len(want) || len(want) < 2 {
		t.Fatalf("%d messages for a request over %d partitions", len(msgs), len(want))
	}
	for _, m := range msgs {
		_, part, _ := natsjs.ParseSubject(m.subject)
		var ids []string
		for _, e := range m.events {
			ids = append(ids, e.GetEvent().GetEventId())
		}
		if m.id != fmt.Sprintf("batch-1.%d", part) || !slices.Equal(ids, want[part]) {
			t.Fatalf("message %q on %s holds %v, want id batch-1.%d and %v", m.id, m.subject, ids, part, want[part])
		}
	}
	if len(seen) != len(req) {
		t.Fatalf("%d of %d events stored", len(seen), len(req))
	}
	if err := p.Publish(ctx, "t", "batch-1", req); err != nil {
		t.Fatalf("the same batch again: %v", err)
	}
	if n := natstest.StreamMsgs(t, js, natsjs.StreamName); n != uint64(len(want)) {
		t.Fatalf("the stream holds %d messages after the batch was resent, want %d", n, len(want))
	}
}

// Under many concurrent callers every event is stored exactly once, in a message of its
// partition, and messages hold several calls' events: fewer messages than requests.
func TestConcurrentCallsAreCoalescedExactlyOnce(t *testing.T) {
	const callers, calls = 48, 5
	js := streamOf(t, natstest.Start(t), natsjs.DefaultStream)
	reg := prometheus.NewRegistry()
	p := ingestjs.NewPublisher(js, reg)
	var wg sync.WaitGroup
	errs := make(chan error, callers*calls)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				errs <- p.Publish(context.Background(), "t", fmt.Sprintf("b-%d-%d", c, i), request("t", c, i))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	msgs := storedMessages(t, js)
	seen := checkPartitions(t, "t", msgs)
	if len(seen) != callers*calls*100 {
		t.Fatalf("%d distinct events stored, want %d", len(seen), callers*calls*100)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("event %s stored %d times", id, n)
		}
	}
	t.Logf("%d requests, %d messages", callers*calls, len(msgs))
	if len(msgs) >= callers*calls {
		t.Fatalf("%d messages for %d requests: no merging", len(msgs), callers*calls)
	}
	if n := counter(t, reg, "ingest_batches_published_total"); n != float64(len(msgs)) {
		t.Errorf("ingest_batches_published_total = %v, want %d", n, len(msgs))
	}
	if n := counter(t, reg, "ingest_events_accepted_total"); n != callers*calls*100 {
		t.Errorf("ingest_events_accepted_total = %v, want %d", n, callers*calls*100)
	}
}

// A message holds at most the configured events and bytes; a call whose events of a
// partition do not fit is split over several messages, in order, none with the single-call id.
func TestMessagesKeepTheirLimits(t *testing.T) {
	for _, lim := range []struct {
		name                string
		maxEvents, maxBytes int
	}{{"events", 30, 256 << 10}, {"bytes", 1000, 1024}} {
		t.Run(lim.name, func(t *testing.T) {
			js := streamOf(t, natstest.Start(t), natsjs.DefaultStream)
			cfg := ingestjs.DefaultConfig
			cfg.MaxMessageEvents, cfg.MaxMessageBytes = lim.maxEvents, lim.maxBytes
			p := ingestjs.NewPublisher(js, nil, ingestjs.WithConfig(cfg))
			within := func(msgs []storedMsg) {
				t.Helper()
				for _, m := range msgs {
					if len(m.events) > lim.maxEvents || m.size > lim.maxBytes {
						t.Fatalf("message %s: %d events, %d bytes; limits %d and %d", m.id, len(m.events), m.size, lim.maxEvents, lim.maxBytes)
					}
				}
			}

			// One call, one user: 100 events of one partition.
			solo := make([]string, 100)
			for i := range solo {
				solo[i] = fmt.Sprintf("solo-%03d", i)
			}
			if err := p.Publish(context.Background(), "t", "solo", batch("t", solo...)); err != nil {
				t.Fatal(err)
			}
			msgs := storedMessages(t, js)
			within(msgs)
			var ids []string
			for _, m := range msgs {
				if strings.HasPrefix(m.id, "solo.") {
					t.Fatalf("a part of a split call has the whole call's id %q", m.id)
				}
				for _, e := range m.events {
					ids = append(ids, e.GetEvent().GetEventId())
				}
			}
			if len(msgs) < 2 || !slices.Equal(ids, solo) {
				t.Fatalf("100 events in %d messages, stored in this order: %v", len(msgs), ids)
			}

			// Concurrent callers.
			var wg sync.WaitGroup
			for c := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 5 {
						if err := p.Publish(context.Background(), "t", fmt.Sprintf("b-%d-%d", c, i), request("t", c, i)); err != nil {
							t.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			msgs = storedMessages(t, js)
			within(msgs)
			seen := checkPartitions(t, "t", msgs)
			if len(seen) != 100+8*5*100 {
				t.Fatalf("%d distinct events stored, want %d", len(seen), 100+8*5*100)
			}
			for id, n := range seen {
				if n != 1 {
					t.Fatalf("event %s stored %d times", id, n)
				}
			}
		})
	}
}

// A failed message fails every call waiting on it, with the domain's error.
func TestPublishErrorsReachEveryWaiter(t *testing.T) {
	concurrently := func(p *ingestjs.Publisher, n int) []error {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for c := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[c] = p.Publish(context.Background(), "t", fmt.Sprint("late-", c), request("t", 1000+c, 0))
			}()
		}
		wg.Wait()
		return errs
	}
	t.Run("stream full", func(t *testing.T) {
		tiny := natsjs.DefaultStream
		tiny.MaxBytes = 64 << 10
		p := ingestjs.NewPublisher(streamOf(t, natstest.Start(t), tiny), nil)
		var err error
		for i := 0; i < 1000 && err == nil; i++ {
			err = p.Publish(context.Background(), "t", fmt.Sprint(i), request("t", 0, i))
		}
		if !errors.Is(err, ingest.ErrStreamFull) {
			t.Fatalf("filling the stream: %v, want ingest.ErrStreamFull", err)
		}
		for c, err := range concurrently(p, 16) {
			if !errors.Is(err, ingest.ErrStreamFull) {
				t.Errorf("caller %d with the stream full: %v, want ingest.ErrStreamFull", c, err)
			}
		}
	})
	t.Run("nats down", func(t *testing.T) {
		ns := natstest.StartServer(t)
		cfg := ingestjs.DefaultConfig
		cfg.PublishTimeout = 2 * time.Second
		p := ingestjs.NewPublisher(streamOf(t, ns.ClientURL(), natsjs.DefaultStream), nil, ingestjs.WithConfig(cfg))
		ns.Shutdown()
		for c, err := range concurrently(p, 16) {
			if !errors.Is(err, ingest.ErrStreamUnavailable) {
				t.Errorf("caller %d with NATS down: %v, want ingest.ErrStreamUnavailable", c, err)
			}
		}
	})
}
