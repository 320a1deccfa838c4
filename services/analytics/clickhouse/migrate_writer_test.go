package clickhouse_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// A version-3 database whose writer stored two batches and died before acknowledging them —
// the second holding a client retry of an event of the first (v1 stored it twice) — migrates
// with every event once, and a version-4 writer then acknowledges both batches without
// inserting them again (the migration's commit rows list their sequences), stores the next
// batch, and drops its retry of an event stored before the migration (event_ids carried over).
func TestMigratedDatabaseKeepsTheUnacknowledgedBatchesOfAV1Writer(t *testing.T) {
	ctx := context.Background()
	srv, users := natstest.StartSecured(t)
	connectNATS := func(u natstest.User) jetstream.JetStream {
		nc, js, err := natsjs.Connect(srv.ClientURL(), u.Name, natsjs.WithUser(u.Name, u.Password))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return js
	}
	ingest, analyticsJS, admin := connectNATS(users.Ingest), connectNATS(users.Analytics), connectNATS(users.Admin)
	if err := natsjs.EnsureStreams(ctx, ingest, natsjs.DefaultStream); err != nil {
		t.Fatal(err)
	}
	stream, err := ingest.Stream(ctx, natsjs.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	ev := func(id, user string) *ingestv1.AcceptedEvent {
		return &ingestv1.AcceptedEvent{TenantId: "t1", ReceivedAt: timestamppb.New(now), CorrectedTime: timestamppb.New(now),
			Event: &ingestv1.Event{EventId: id, Type: ingestv1.EventType_EVENT_TYPE_CLICK, Name: "tap", UserId: user, CampaignId: "c1"}}
	}
	batches := [][]*ingestv1.AcceptedEvent{
		{ev("a1", "u1"), ev("a2", "u2"), ev("a3", "u3")}, // sequence 1, stored by v1
		{ev("b1", "u4"), ev("b2", "u5"), ev("a1", "u1")}, // sequence 2, stored by v1: a retry of a1
		{ev("c1", "u6"), ev("b1", "u4")},                 // sequence 3, not stored: a retry of b1
	}
	for i, b := range batches {
		data, _ := proto.Marshal(&ingestv1.AcceptedBatch{Events: b})
		// On the tenant's subject, as ingest published before partitions (only the admin may now).
		if _, err := natsjs.Publish(ctx, admin, "t1", string(rune('a'+i)), data, nil); err != nil {
			t.Fatal(err)
		}
	}

	db := chtest.NewDatabase(t)
	writerUser := clickhouse.User(chtest.Writer(t))
	if err := clickhouse.MigrateTo(ctx, chtest.Addr(), db, writerUser, 3); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, db)
	sink := clickhouse.NewEventSink(conn)
	// The v1 writer recorded the stream's incarnation and stored the first two batches.
	if _, err := sink.SeqOffset(ctx, uint64(stream.CachedInfo().Created.UnixNano()), 0); err != nil {
		t.Fatal(err)
	}
	for i, b := range batches[:2] {
		var rows []writer.Row
		for _, e := range b {
			rows = append(rows, writer.Row{Event: e, Seq: uint64(i + 1)})
		}
		if err := insertV1(ctx, conn, rows); err != nil {
			t.Fatal(err)
		}
	}
	if n := scalar(t, conn, `SELECT count() FROM events`); n != 6 {
		t.Fatalf("v1 holds %d rows, want 6 (a1 twice)", n)
	}

	if err := clickhouse.Migrate(ctx, chtest.Addr(), db, writerUser); err != nil {
		t.Fatal(err)
	}
	counts := func() [3]uint64 {
		return [3]uint64{scalar(t, conn, `SELECT count() FROM events WHERE tenant_id != ''`),
			scalar(t, conn, `SELECT countMerge(events) FROM events_hourly`), scalar(t, conn, `SELECT count() FROM event_ids_local`)}
	}
	if got := counts(); got != [3]uint64{5, 5, 5} {
		t.Fatalf("after the migration: events, rollup, event_ids = %v, want 5 each", got)
	}

	reg := prometheus.NewRegistry()
	w := writer.New(analyticsJS, []writer.Sink{sink}, writer.Config{BatchRows: 10000, MaxWait: 100 * time.Millisecond}, slog.New(slog.DiscardHandler), reg)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	meshtest.Eventually(t, 15*time.Second, func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, "the writer did not acknowledge every batch")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Settle(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := counts(); got != [3]uint64{6, 6, 6} {
		t.Errorf("after the writer: events, rollup, event_ids = %v, want 6 each (c1 added, nothing again)", got)
	}
	if n := scalar(t, conn, `SELECT uniqExact(tenant_id, event_id) FROM events WHERE tenant_id != ''`); n != 6 {
		t.Errorf("%d distinct events, want 6", n)
	}
	// The stored batches were known as stored from the commit rows, not only caught one event
	// at a time by the dedup step. It dropped two: the retry of b1, and a1 of the first batch,
	// whose row v1 replaced by its retry in the second (FINAL keeps the newest), so the commit
	// rows do not list the first batch in a1's partition.
	if n := testutil.ToFloat64(counter(t, reg, "writer_duplicate_events_total")); n != 2 {
		t.Errorf("the dedup step dropped %v events, want 2 (a1 of the first batch, the retry of b1)", n)
	}
}

// counter is the value of the counter name registered with reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: name}, func() float64 { return mf.GetMetric()[0].GetCounter().GetValue() })
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}
