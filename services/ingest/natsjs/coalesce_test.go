package natsjs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
)

// gate holds publishes in flight for as long as a test wants. JetStream cannot be paused, so
// on a real NATS server without the event stream a plain subscriber on events.> stands in for
// the stream's acknowledgement: each publish waits at the gate until the test answers it with
// a JetStream PubAck.
type gate struct {
	js   jetstream.JetStream
	msgs chan *nats.Msg
	seq  atomic.Uint64
}

func startGate(t *testing.T) *gate {
	t.Helper()
	url := natstest.Start(t)
	responder, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(responder.Close)
	g := &gate{msgs: make(chan *nats.Msg, 64)}
	if _, err := responder.ChanSubscribe(natsjs.SubjectPrefix+">", g.msgs); err != nil {
		t.Fatal(err)
	}
	if err := responder.Flush(); err != nil {
		t.Fatal(err)
	}
	nc, js, err := natsjs.Connect(url, "ingest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	g.js = js
	return g
}

// next is the next publish at the gate.
func (g *gate) next(t *testing.T) *nats.Msg {
	t.Helper()
	select {
	case m := <-g.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no publish reached the gate")
		return nil
	}
}

// ack stores m as far as its publisher knows.
func (g *gate) ack(t *testing.T, m *nats.Msg) {
	t.Helper()
	if err := m.Respond(fmt.Appendf(nil, `{"stream":%q,"seq":%d}`, natsjs.StreamName, g.seq.Add(1))); err != nil {
		t.Fatal(err)
	}
}

func ids(t *testing.T, m *nats.Msg) []string {
	t.Helper()
	b, err := natsjs.DecodeBatch(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range b.GetEvents() {
		out = append(out, e.GetEvent().GetEventId())
	}
	return out
}

// of is a batch of tenant t's user u: all in one partition.
func of(ids ...string) []*ingestv1.AcceptedEvent {
	out := make([]*ingestv1.AcceptedEvent, len(ids))
	for i, id := range ids {
		out[i] = &ingestv1.AcceptedEvent{TenantId: "t", ReceivedAt: timestamppb.Now(),
			Event: &ingestv1.Event{EventId: id, Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: "u"}}
	}
	return out
}

// waitingEvents is the number of events of tenant t waiting for partition part's next message
// (-1: no queue for t).
func (p *Publisher) waitingEvents(part int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t := p.tenants["t"]; t != nil {
		return t.lanes[part].waiting
	}
	return -1
}

// publishing starts p.Publish(ctx, "t", id, of(events…)) and returns where its error arrives.
func publishing(ctx context.Context, p *Publisher, id string, events ...string) chan error {
	done := make(chan error, 1)
	go func() { done <- p.Publish(ctx, "t", id, of(events...)) }()
	return done
}

func result(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Publish did not return")
		return nil
	}
}

// A caller whose context ends stops waiting at once with its context's error. Its events not
// yet in a message are not sent; a message already holding them is not cancelled, and the
// other calls in it get its outcome.
func TestAWaiterThatGivesUpLeavesTheOthersAlone(t *testing.T) {
	part := natsjs.Partition("t", "u")
	bg := context.Background()

	t.Run("before its message", func(t *testing.T) {
		g := startGate(t)
		p := NewPublisher(g.js, nil)
		x := publishing(bg, p, "x", "x1")
		inFlight := g.next(t)
		ctx, cancel := context.WithCancel(bg)
		a := publishing(ctx, p, "a", "a1", "a2")
		b := publishing(bg, p, "b", "b1")
		meshtest.Eventually(t, 5*time.Second, func() bool { return p.waitingEvents(part) == 3 }, "a's and b's events are not waiting")
		cancel()
		if err := result(t, a); !errors.Is(err, context.Canceled) {
			t.Fatalf("a gave up: %v, want context.Canceled", err)
		}
		if n := p.waitingEvents(part); n != 1 {
			t.Fatalf("%d events wait after a gave up, want b's 1", n)
		}
		g.ack(t, inFlight)
		if err := result(t, x); err != nil {
			t.Fatal(err)
		}
		m := g.next(t)
		if got := ids(t, m); !slices.Equal(got, []string{"b1"}) || m.Header.Get(jetstream.MsgIDHeader) != fmt.Sprintf("b.%d", part) {
			t.Fatalf("next message %q holds %v, want b's b1 alone", m.Header.Get(jetstream.MsgIDHeader), got)
		}
		g.ack(t, m)
		if err := result(t, b); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("in a shared message", func(t *testing.T) {
		g := startGate(t)
		p := NewPublisher(g.js, nil)
		x := publishing(bg, p, "x", "x1")
		inFlight := g.next(t)
		ctx, cancel := context.WithCancel(bg)
		a := publishing(ctx, p, "a", "a1", "a2")
		meshtest.Eventually(t, 5*time.Second, func() bool { return p.waitingEvents(part) == 2 }, "a's events are not waiting")
		b := publishing(bg, p, "b", "b1")
		meshtest.Eventually(t, 5*time.Second, func() bool { return p.waitingEvents(part) == 3 }, "b's events are not waiting")
		g.ack(t, inFlight)
		if err := result(t, x); err != nil {
			t.Fatal(err)
		}
		shared := g.next(t)
		if got := ids(t, shared); !slices.Equal(got, []string{"a1", "a2", "b1"}) {
			t.Fatalf("the merged message holds %v", got)
		}
		if id := shared.Header.Get(jetstream.MsgIDHeader); id == fmt.Sprintf("a.%d", part) || id == fmt.Sprintf("b.%d", part) {
			t.Fatalf("the merged message has one call's id %q", id)
		}
		cancel()
		if err := result(t, a); !errors.Is(err, context.Canceled) {
			t.Fatalf("a gave up: %v, want context.Canceled", err)
		}
		g.ack(t, shared)
		if err := result(t, b); err != nil {
			t.Fatalf("b, sharing the message a gave up on: %v", err)
		}
		meshtest.Eventually(t, 5*time.Second, func() bool { return p.waitingEvents(part) == -1 }, "the partition's publisher did not end")
	})
}

// The events waiting for a partition's next message are bounded: a call that finds no room
// waits until the message in flight took the waiting events, or gives up with its context;
// a call's events are let in whole when nothing waits.
func TestWaitingEventsAreBounded(t *testing.T) {
	part := natsjs.Partition("t", "u")
	bg := context.Background()
	g := startGate(t)
	cfg := DefaultConfig
	cfg.MaxWaitingEvents = 3
	p := NewPublisher(g.js, nil, WithConfig(cfg))

	x := publishing(bg, p, "x", "x1")
	inFlight := g.next(t)
	a := publishing(bg, p, "a", "a1", "a2")
	meshtest.Eventually(t, 5*time.Second, func() bool { return p.waitingEvents(part) == 2 }, "a's events are not waiting")
	waits := func() float64 { return testutil.ToFloat64(p.roomWaits) }
	ctx, cancel := context.WithCancel(bg)
	late := publishing(ctx, p, "late", "l1", "l2")
	meshtest.Eventually(t, 5*time.Second, func() bool { return waits() == 1 }, "the late call did not wait for room")
	if n := p.waitingEvents(part); n != 2 {
		t.Fatalf("%d events wait, want a's 2 (the late call's are not let in)", n)
	}
	cancel()
	if err := result(t, late); !errors.Is(err, context.Canceled) {
		t.Fatalf("the late call gave up: %v, want context.Canceled", err)
	}
	b := publishing(bg, p, "b", "b1", "b2")
	meshtest.Eventually(t, 5*time.Second, func() bool { return waits() == 2 }, "b did not wait for room")
	g.ack(t, inFlight)
	if err := result(t, x); err != nil {
		t.Fatal(err)
	}
	// a's events went into the next message, which made room for b's.
	m := g.next(t)
	if got := ids(t, m); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Fatalf("message after x holds %v, want a's", got)
	}
	meshtest.Eventually(t, 5*time.Second, func() bool { return p.waitingEvents(part) == 2 }, "b's events are not waiting")
	g.ack(t, m)
	m = g.next(t)
	if got := ids(t, m); !slices.Equal(got, []string{"b1", "b2"}) {
		t.Fatalf("message after a's holds %v, want b's", got)
	}
	g.ack(t, m)
	for _, done := range []chan error{a, b} {
		if err := result(t, done); err != nil {
			t.Fatal(err)
		}
	}
	// More events than the bound, with nothing waiting: let in whole.
	big := publishing(bg, p, "big", "g1", "g2", "g3", "g4", "g5")
	m = g.next(t)
	g.ack(t, m)
	if err := result(t, big); err != nil || len(ids(t, m)) != 5 {
		t.Fatalf("5 events over a bound of 3: %v, message %v", err, ids(t, m))
	}
}

// A message carries the trace context of its first call; a merged one that of a span of its
// own under the first call, linked to the other calls.
func TestAMergedMessageCarriesTheFirstCallsTraceAndLinksTheOthers(t *testing.T) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	rec := tracetest.NewSpanRecorder()
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	call := func(n byte) (context.Context, trace.SpanContext) {
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{n}, SpanID: trace.SpanID{n}, TraceFlags: trace.FlagsSampled})
		return trace.ContextWithSpanContext(context.Background(), sc), sc
	}
	part := natsjs.Partition("t", "u")
	g := startGate(t)
	p := NewPublisher(g.js, nil)
	ctxX, scX := call(1)
	x := publishing(ctxX, p, "x", "x1")
	inFlight := g.next(t)
	if tp := http.Header(inFlight.Header).Get("traceparent"); !strings.Contains(tp, scX.TraceID().String()) || !strings.Contains(tp, scX.SpanID().String()) {
		t.Fatalf("a one-call message carries traceparent %q, want the call's span %s", tp, scX.SpanID())
	}
	ctxA, scA := call(2)
	a := publishing(ctxA, p, "a", "a1")
	meshtest.Eventually(t, 5*time.Second, func() bool { return p.waitingEvents(part) == 1 }, "a's events are not waiting")
	ctxB, scB := call(3)
	b := publishing(ctxB, p, "b", "b1")
	meshtest.Eventually(t, 5*time.Second, func() bool { return p.waitingEvents(part) == 2 }, "b's events are not waiting")
	g.ack(t, inFlight)
	merged := g.next(t)
	g.ack(t, merged)
	for _, done := range []chan error{x, a, b} {
		if err := result(t, done); err != nil {
			t.Fatal(err)
		}
	}
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans ended, want the merged message's", len(spans))
	}
	s := spans[0]
	if s.Parent().SpanID() != scA.SpanID() || s.SpanContext().TraceID() != scA.TraceID() || len(s.Links()) != 1 || s.Links()[0].SpanContext.SpanID() != scB.SpanID() {
		t.Fatalf("merged message's span: parent %s, links %v; want parent a's %s, a link to b's %s", s.Parent().SpanID(), s.Links(), scA.SpanID(), scB.SpanID())
	}
	if tp := http.Header(merged.Header).Get("traceparent"); !strings.Contains(tp, s.SpanContext().SpanID().String()) {
		t.Fatalf("merged message carries traceparent %q, want its span %s", tp, s.SpanContext().SpanID())
	}
}

// A round waits (up to its bound) for the calls the previous round answered: callers that send
// again as soon as they are answered go in the same message as the calls that waited meanwhile,
// instead of in the message after.
func TestARoundWaitsForTheCallsItAnswered(t *testing.T) {
	part := natsjs.Partition("t", "u")
	bg := context.Background()
	g := startGate(t)
	cfg := DefaultConfig
	cfg.MaxLinger = time.Minute // bounded by the last round's duration, which the test holds
	p := NewPublisher(g.js, nil, WithConfig(cfg))
	// Every round lasts a minute by the publisher's measure, so the next round's wait for x's
	// caller is bounded by MaxLinger alone, not by how fast this machine ran the round.
	p.since = func(time.Time) time.Duration { return time.Minute }
	x := publishing(bg, p, "x", "x1")
	inFlight := g.next(t)
	a := publishing(bg, p, "a", "a1")
	b := publishing(bg, p, "b", "b1")
	meshtest.Eventually(t, 5*time.Second, func() bool { return p.waitingEvents(part) == 2 }, "a's and b's events are not waiting")
	g.ack(t, inFlight)
	if err := result(t, x); err != nil {
		t.Fatal(err)
	}
	x2 := publishing(bg, p, "x2", "x2") // x's caller, answered, sends again
	m := g.next(t)
	if got := slices.Sorted(slices.Values(ids(t, m))); !slices.Equal(got, []string{"a1", "b1", "x2"}) {
		t.Fatalf("the round after x's holds %v, want a's, b's and x's caller's next", got)
	}
	g.ack(t, m)
	for _, done := range []chan error{a, b, x2} {
		if err := result(t, done); err != nil {
			t.Fatal(err)
		}
	}
}
