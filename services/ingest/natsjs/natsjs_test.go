package natsjs_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

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

func streamOf(t *testing.T, url string, cfg natsjs.StreamConfig) jetstream.JetStream {
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

// A batch is one message on the tenant's subject carrying the caller's trace context; the same
// batch id again is a duplicate the stream drops.
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
	if err != nil || len(b.GetEvents()) != 2 || b.GetEvents()[1].GetTenantId() != "tenant-1" || msg.Subject != "events.tenant-1" || msg.Header.Get(jetstream.MsgIDHeader) != "batch-1" {
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
