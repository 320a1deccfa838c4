package nats

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/services/billing"
	"github.com/campaignmesh/campaignmesh/services/billing/postgres"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func openStore(tb testing.TB) *postgres.Store {
	tb.Helper()
	s, err := postgres.Open(context.Background(), pgtest.NewDatabase(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

func connect(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(natstest.Start(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

// waitSourcing waits until the server copies the event stream into the metering stream: it
// sets the copying up in the background after the stream's creation (about 0.2 s), and a batch
// the writer acknowledges before is not copied (see the package doc).
func waitSourcing(ctx context.Context, t *testing.T, js jetstream.JetStream) {
	t.Helper()
	meshtest.Eventually(t, 10*time.Second, func() bool {
		s, err := js.Stream(ctx, MeteringStream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && len(info.Sources) == 1 && info.Sources[0].Active >= 0 && info.Sources[0].Error == nil
	}, "the metering stream sources the event stream")
}

// drainLikeTheWriter acknowledges every batch of the event stream as soon as it arrives, as
// the analytics writer does once ClickHouse has it: the work queue then forgets the batch.
func drainLikeTheWriter(ctx context.Context, t *testing.T, js jetstream.JetStream) {
	t.Helper()
	cons, err := js.CreateOrUpdateConsumer(ctx, natsjs.StreamName, natsjs.WriterConsumerConfig(0, 1))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { _ = m.Ack() })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
}

func events(tenant string, n int, at time.Time) []*ingestv1.AcceptedEvent {
	out := make([]*ingestv1.AcceptedEvent, n)
	for i := range out {
		out[i] = &ingestv1.AcceptedEvent{TenantId: tenant, ReceivedAt: timestamppb.New(at),
			Event: &ingestv1.Event{EventId: fmt.Sprintf("%s-%d-%d", tenant, at.UnixNano(), i), Type: ingestv1.EventType_EVENT_TYPE_TRACK, Name: "e"}}
	}
	return out
}

func publish(ctx context.Context, t *testing.T, js jetstream.JetStream, tenant string, part int, msgID string, evs []*ingestv1.AcceptedEvent) {
	t.Helper()
	data, err := natsjs.EncodeBatch(evs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsjs.PublishPart(ctx, js, tenant, part, msgID, data, nil); err != nil {
		t.Fatal(err)
	}
}

func TestMeteringCountsEveryAcceptedBatchOnceAcrossACrashBeforeTheAck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, store := connect(t), openStore(t)
	if err := natsjs.EnsureStreams(ctx, js, natsjs.StreamConfig{MaxBytes: 64 << 20, MaxAge: time.Hour, Duplicates: time.Minute, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	// The metering stream exists before ingest publishes (billing creates it at its start);
	// the writer drains the event stream meanwhile.
	if err := EnsureMeteringStream(ctx, js, 64<<20); err != nil {
		t.Fatal(err)
	}
	waitSourcing(ctx, t, js)
	drainLikeTheWriter(ctx, t, js)

	day1 := time.Date(2026, 11, 28, 23, 59, 59, 0, time.UTC)
	day2 := day1.Add(2 * time.Second)
	want := map[string]map[string]int64{"2026-11-28": {}, "2026-11-29": {}}
	for i := range 40 {
		tenant, at := fmt.Sprintf("t%d", i%3), day1
		if i%2 == 1 {
			at = day2
		}
		n := 1 + i%7
		publish(ctx, t, js, tenant, i%natsjs.Partitions, fmt.Sprintf("batch-%d", i), events(tenant, n, at))
		want[at.Format(billing.DayLayout)][tenant] += int64(n)
	}
	// A retry of batch-0 within the duplicate window: the stream drops it; it counts once.
	publish(ctx, t, js, "t0", 0, "batch-0", events("t0", 1, day1))
	// A batch of events of another tenant than its subject's counts none of them.
	publish(ctx, t, js, "t1", 0, "forged", events("t2", 3, day1))

	// The first consumer is killed after its commit, before its acks.
	killed := make(chan struct{})
	first := NewMeteringConsumer(js, store, ConsumerConfig{Fetch: 15, AckWait: time.Second}, quiet)
	var once sync.Once
	first.beforeAck = func() bool { once.Do(func() { close(killed) }); return false }
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	<-killed
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	counted := func() map[string]map[string]int64 {
		got := map[string]map[string]int64{}
		for d := range want {
			c, err := store.AcceptedCounts(ctx, day(t, d))
			if err != nil {
				t.Fatal(err)
			}
			got[d] = c
		}
		return got
	}
	if c := counted(); c["2026-11-28"]["t0"]+c["2026-11-28"]["t1"]+c["2026-11-28"]["t2"]+c["2026-11-29"]["t0"]+c["2026-11-29"]["t1"]+c["2026-11-29"]["t2"] == 0 {
		t.Fatal("the killed consumer committed nothing: the test would not exercise a redelivery")
	}

	// Its successor gets the unacknowledged messages again (after AckWait) and the rest.
	var acks atomic.Int64
	second := NewMeteringConsumer(js, store, ConsumerConfig{Fetch: 15, AckWait: time.Second}, quiet)
	second.beforeAck = func() bool { acks.Add(1); return true }
	ctx2, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = second.Run(ctx2) }()
	meshtest.Within(30*time.Second, func() bool {
		return natstest.StreamMsgs(t, js, MeteringStream) == 0 && cmp.Equal(want, counted())
	})
	if diff := cmp.Diff(want, counted()); diff != "" {
		t.Fatalf("accepted events (-want +got):\n%s", diff)
	}
	if n := natstest.StreamMsgs(t, js, MeteringStream); n != 0 {
		t.Fatalf("the metering stream still holds %d batches", n)
	}
	if n := natstest.StreamMsgs(t, js, natsjs.StreamName); n != 0 {
		t.Fatalf("the event stream holds %d batches: the metering copy kept the writer from draining it", n)
	}
	meshtest.Eventually(t, 10*time.Second, func() bool { return !second.AsOf(time.Now()).Before(day2) },
		"as-of %v after the consumer drained the stream", second.AsOf(time.Now()))
}

func day(t *testing.T, s string) time.Time {
	t.Helper()
	d, err := time.Parse(billing.DayLayout, s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// After a restart of the NATS server the copying resumes where it stopped; a writer that
// reconnects at once and drains the backlog must not make billing miss a batch.
func TestMeteringMissesNothingAcrossANATSRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, dir := openStore(t), t.TempDir()
	srv := natstest.StartServerWith(t, func(o *server.Options) { o.StoreDir = dir })
	port := srv.Addr().(*net.TCPAddr).Port
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := natsjs.EnsureStreams(ctx, js, natsjs.StreamConfig{MaxBytes: 64 << 20, MaxAge: time.Hour, Duplicates: time.Minute, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	if err := EnsureMeteringStream(ctx, js, 64<<20); err != nil {
		t.Fatal(err)
	}
	waitSourcing(ctx, t, js)
	at := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	for i := range 20 { // a backlog: the writer is away
		publish(ctx, t, js, "t1", i%natsjs.Partitions, fmt.Sprint("before-", i), events("t1", 2, at))
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	natstest.StartServerWith(t, func(o *server.Options) { o.StoreDir, o.Port = dir, port })
	// The writer is back first and drains; ingest publishes more meanwhile.
	drainLikeTheWriter(ctx, t, js)
	for i := range 20 {
		publish(ctx, t, js, "t1", i%natsjs.Partitions, fmt.Sprint("after-", i), events("t1", 3, at))
	}
	c := NewMeteringConsumer(js, store, ConsumerConfig{Fetch: 7, AckWait: time.Second}, quiet)
	ctx2, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = c.Run(ctx2) }()
	const want = 20*2 + 20*3
	counted := func() int64 {
		n, err := store.AcceptedCounts(ctx, billing.Day(at))
		if err != nil {
			t.Fatal(err)
		}
		return n["t1"]
	}
	meshtest.Within(30*time.Second, func() bool { return counted() == want && natstest.StreamMsgs(t, js, MeteringStream) == 0 })
	if got := counted(); got != want {
		t.Fatalf("accepted %d events, want %d", got, want)
	}
}

// Why billing reads a copy: the event stream is a work queue, and the server refuses a
// consumer of billing's on it next to the writers' (and one it accepted would take the
// writer's batches away).
func TestTheEventStreamRefusesABillingConsumer(t *testing.T) {
	ctx := context.Background()
	js := connect(t)
	if err := natsjs.EnsureStreams(ctx, js, natsjs.StreamConfig{MaxBytes: 64 << 20, MaxAge: time.Hour, Duplicates: time.Minute, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, natsjs.StreamName, natsjs.WriterConsumerConfig(0, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, natsjs.StreamName, MeteringConsumerConfig(time.Second)); err == nil {
		t.Fatal("the work-queue event stream accepted a second consumer over the writer's subjects")
	}
}
