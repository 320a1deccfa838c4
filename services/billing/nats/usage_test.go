package nats

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/usage"
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

func connectTo(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
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

func connect(tb testing.TB) jetstream.JetStream { return connectTo(tb, natstest.Start(tb)) }

func day(t *testing.T, s string) time.Time {
	t.Helper()
	d, err := time.Parse(billing.DayLayout, s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// publishRaw publishes a body on usage.<subjectTenant> as a publisher would, bypassing
// usage.Publish's checks (a forged or broken unit).
func publishRaw(ctx context.Context, t *testing.T, js jetstream.JetStream, subjectTenant, id string, body []byte) {
	t.Helper()
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: usage.Subject(subjectTenant), Data: body}, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
}

// counted are the units stored for day, by tenant and meter.
func counted(ctx context.Context, t *testing.T, store *postgres.Store, d time.Time) map[string]map[billing.Meter]int64 {
	t.Helper()
	c, err := store.UnitCounts(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// runUntilDrained runs a consumer until the stream has nothing pending for it and the counts
// are want, then stops it; it fails the test with the difference otherwise.
func runUntilDrained(ctx context.Context, t *testing.T, js jetstream.JetStream, store *postgres.Store, d time.Time, want map[string]map[billing.Meter]int64) {
	t.Helper()
	c := NewUsageConsumer(js, store, ConsumerConfig{Fetch: 10, AckWait: time.Second}, quiet)
	ctx2, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx2) }()
	meshtest.Within(30*time.Second, func() bool {
		return natstest.ConsumerPending(t, js, usage.StreamName, UsageConsumerName) == 0 && cmp.Equal(want, counted(ctx, t, store, d))
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, counted(ctx, t, store, d)); diff != "" {
		t.Fatalf("units (-want +got):\n%s", diff)
	}
	if n := natstest.ConsumerPending(t, js, usage.StreamName, UsageConsumerName); n != 0 {
		t.Fatalf("%d units still pending", n)
	}
}

func TestUsageConsumerCountsEveryUnitOnceAcrossACrashBeforeTheAck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, store := connect(t), openStore(t)
	if _, err := usage.EnsureStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	want := map[string]map[billing.Meter]int64{}
	add := func(u usage.Unit) {
		if want[u.Tenant] == nil {
			want[u.Tenant] = map[billing.Meter]int64{}
		}
		want[u.Tenant][billing.Meter(u.Meter)] += u.Units
	}
	var units []usage.Unit
	for i := range 30 {
		tenant := fmt.Sprint("t", i%2)
		units = append(units, usage.Unit{ID: fmt.Sprint("q", i), Tenant: tenant, Meter: usage.MeterAnalyticsQueries, Units: 1, Time: at},
			usage.Unit{ID: fmt.Sprintf("ea-%d-20261129", i), Tenant: tenant, Meter: usage.MeterEventsAccepted, Units: int64(1 + i%7), Time: at})
	}
	for _, u := range units {
		add(u)
	}
	if err := usage.PublishAll(ctx, js, units); err != nil {
		t.Fatal(err)
	}
	// A writer's retry of a batch (the same unit id): the stream drops it; it counts once.
	if err := usage.Publish(ctx, js, units[1]); err != nil {
		t.Fatal(err)
	}
	// Another tenant's unit on t0's subject, and a gauge nobody records this way: not counted.
	publishRaw(ctx, t, js, "t0", "forged", []byte(`{"id":"forged","tenant":"t1","meter":"analytics_queries","units":1,"time":"2026-11-29T08:00:00Z"}`))
	publishRaw(ctx, t, js, "t0", "gauge", []byte(`{"id":"gauge","tenant":"t0","meter":"storage_bytes","units":5,"time":"2026-11-29T08:00:00Z"}`))

	// The first consumer is killed after its commit, before its acks.
	killed := make(chan struct{})
	first := NewUsageConsumer(js, store, ConsumerConfig{Fetch: 15, AckWait: time.Second}, quiet)
	var once sync.Once
	first.beforeAck = func() bool { once.Do(func() { close(killed) }); return false }
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	<-killed
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(counted(ctx, t, store, billing.Day(at))) == 0 {
		t.Fatal("the killed consumer committed nothing: the test would not exercise a redelivery")
	}
	// Its successor gets the unacknowledged units again (after AckWait) and the rest.
	runUntilDrained(ctx, t, js, store, billing.Day(at), want)
}

// After a restart of the NATS server (file storage) the consumer goes on from its durable
// state: nothing is missed, nothing counted twice.
func TestUsageConsumerMissesNothingAcrossANATSRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, dir := openStore(t), t.TempDir()
	srv := natstest.StartServerWith(t, func(o *server.Options) { o.StoreDir = dir })
	port := srv.Addr().(*net.TCPAddr).Port
	js := connectTo(t, srv.ClientURL())
	if _, err := usage.EnsureStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	publish := func(prefix string, n int) {
		var units []usage.Unit
		for i := range n {
			units = append(units, usage.Unit{ID: fmt.Sprint(prefix, i), Tenant: "t1", Meter: usage.MeterEventsAccepted, Units: 2, Time: at})
		}
		if err := usage.PublishAll(ctx, js, units); err != nil {
			t.Fatal(err)
		}
	}
	publish("before-", 20)
	c := NewUsageConsumer(js, store, ConsumerConfig{Fetch: 7, AckWait: time.Second}, quiet)
	ctx2, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx2) }()
	meshtest.Eventually(t, 20*time.Second, func() bool { return counted(ctx, t, store, billing.Day(at))["t1"][billing.EventsAccepted] == 40 },
		"the units before the restart counted")
	srv.Shutdown()
	srv.WaitForShutdown()
	natstest.StartServerWith(t, func(o *server.Options) { o.StoreDir, o.Port = dir, port })
	meshtest.Eventually(t, 20*time.Second, func() bool { return usage.PublishAll(ctx, js, nil) == nil && js.Conn().IsConnected() },
		"reconnected")
	publish("after-", 20)
	publish("before-", 20) // redelivered publishes of the old ids within the window: dropped
	meshtest.Within(30*time.Second, func() bool { return counted(ctx, t, store, billing.Day(at))["t1"][billing.EventsAccepted] == 80 })
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := counted(ctx, t, store, billing.Day(at))["t1"][billing.EventsAccepted]; got != 80 {
		t.Fatalf("accepted %d events, want 80", got)
	}
}
