package writer_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer/writerfault"
)

// streams is NATS as in production: deploy/nats.conf's users (js publishes as ingest, the
// writer runs as analytics, admin inspects).
type streams struct {
	js, writerJS, admin jetstream.JetStream
}

func newStreams(t *testing.T) *streams {
	t.Helper()
	srv, users := natstest.StartSecured(t)
	connect := func(u natstest.User) jetstream.JetStream {
		nc, js, err := natsjs.Connect(srv.ClientURL(), u.Name, natsjs.WithUser(u.Name, u.Password))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return js
	}
	s := &streams{js: connect(users.Ingest), writerJS: connect(users.Analytics), admin: connect(users.Admin)}
	if err := natsjs.EnsureStreams(context.Background(), s.js, natsjs.DefaultStream); err != nil {
		t.Fatal(err)
	}
	return s
}

// publish stores a batch of events of tenant t1 with the given ids, as ingest does.
func (s *streams) publish(t *testing.T, msgID string, ids ...string) {
	t.Helper()
	b := &ingestv1.AcceptedBatch{}
	now := time.Now()
	for _, id := range ids {
		b.Events = append(b.Events, &ingestv1.AcceptedEvent{
			Event:    &ingestv1.Event{EventId: id, Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: "u", CampaignId: "c1"},
			TenantId: "t1", ReceivedAt: timestamppb.New(now), CorrectedTime: timestamppb.New(now),
		})
	}
	data, _ := proto.Marshal(b)
	if _, err := natsjs.PublishPart(context.Background(), s.js, "t1", natsjs.Partition("t1", "u"), msgID, data, nil); err != nil {
		t.Fatal(err)
	}
}

// publishEvents stores a batch of events as they are: as ingest does, on their partition's
// subject (events.<tenant>.<p>) when they all have the same, else on tenant's subject of the
// form before partitions (events.<tenant>; only the admin may publish there now), which writer
// 0 reads.
func (s *streams) publishEvents(t *testing.T, tenant, msgID string, events ...*ingestv1.AcceptedEvent) {
	t.Helper()
	data, _ := proto.Marshal(&ingestv1.AcceptedBatch{Events: events})
	part := writer.PartOf(events[0])
	for _, e := range events {
		if writer.PartOf(e) != part {
			part = -1
		}
	}
	var err error
	if part >= 0 {
		_, err = natsjs.PublishPart(context.Background(), s.js, tenant, part, msgID, data, nil)
	} else {
		_, err = natsjs.Publish(context.Background(), s.admin, tenant, msgID, data, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// event is an event of tenant t1 with id, user and corrected (and received) time at.
func event(id, user string, at time.Time) *ingestv1.AcceptedEvent {
	return &ingestv1.AcceptedEvent{
		Event:    &ingestv1.Event{EventId: id, Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: user, CampaignId: "c1"},
		TenantId: "t1", ReceivedAt: timestamppb.New(at), CorrectedTime: timestamppb.New(at),
	}
}

// pipeline runs the writer as in production: the streams above and ClickHouse as the writer
// user, one database per shard (conns[0] is conn).
type pipeline struct {
	*streams
	conn  driver.Conn
	conns []driver.Conn
	// window and clock, when set, are the dedup window and the clock of the writers started.
	window time.Duration
	clock  func() time.Time
	// opts are further options of the writers started, reg where they register their metrics
	// (none when nil).
	opts []writer.Option
	reg  prometheus.Registerer
}

func newPipeline(t *testing.T) *pipeline {
	return newShardedPipeline(t, 1)
}

// newShardedPipeline is a pipeline over shards databases of the test server, each migrated as
// its shard of a cluster of that many.
func newShardedPipeline(t *testing.T, shards int) *pipeline {
	t.Helper()
	p := &pipeline{streams: newStreams(t)}
	for i := range shards {
		db := chtest.NewDatabase(t)
		layout := clickhouse.Layout{ShardIndex: i, ShardCount: shards}
		if err := clickhouse.MigrateShard(context.Background(), chtest.Addr(), db, clickhouse.User(chtest.Writer(t)), layout); err != nil {
			t.Fatal(err)
		}
		conn, err := clickhouse.OpenReader(context.Background(), chtest.Addr(), db, clickhouse.User(chtest.Writer(t)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		p.conns = append(p.conns, conn)
	}
	p.conn = p.conns[0]
	return p
}

// start runs a writer until the returned stop is called (or it stops by itself). With
// crashAfter > 0 it crashes right after that many inserts (into the first shard), before
// acknowledging them.
func (p *pipeline) start(t *testing.T, crashAfter int) (done <-chan struct{}, stop func()) {
	t.Helper()
	return p.startWith(t, func(i int, sink writer.Sink, crash func()) writer.Sink {
		if crashAfter > 0 && i == 0 {
			return writerfault.CrashAfterInserts(sink, crashAfter, crash)
		}
		return sink
	})
}

// startWith is start with every shard's sink wrapped by wrap, which may call crash to stop
// the writer as a kill would.
func (p *pipeline) startWith(t *testing.T, wrap func(shard int, sink writer.Sink, crash func()) writer.Sink) (done <-chan struct{}, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var sinks []writer.Sink
	for i, conn := range p.conns {
		sinks = append(sinks, wrap(i, clickhouse.NewEventSink(conn), cancel))
	}
	var opts []writer.Option
	if p.clock != nil {
		opts = append(opts, writer.WithClock(p.clock))
	}
	opts = append(opts, p.opts...)
	w := writer.New(p.writerJS, sinks, writer.Config{BatchRows: 10000, MaxWait: 200 * time.Millisecond, DedupWindow: p.window},
		slog.New(slog.DiscardHandler), p.reg, opts...)
	ch := make(chan struct{})
	go func() { _ = w.Run(ctx); close(ch) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-ch }) }
	t.Cleanup(stop)
	return ch, stop
}

func (p *pipeline) count(t *testing.T, q string) uint64 {
	t.Helper()
	var n uint64
	if err := p.conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (p *pipeline) waitFor(t *testing.T, q string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for p.count(t, q) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %d, want %d", q, p.count(t, q), want)
		}
		time.Sleep(50 * time.Millisecond) // polling under a deadline
	}
}

// settle waits until no writer insert is running. ClickHouse shows an insert's rows in events
// before its materialized view has written them to the rollup; both are there once it ends.
func (p *pipeline) settle(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, conn := range p.conns {
		if _, err := clickhouse.NewEventSink(conn).Settle(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// countAll is q's count summed over the shards.
func (p *pipeline) countAll(t *testing.T, q string) uint64 {
	t.Helper()
	var sum uint64
	for _, conn := range p.conns {
		var n uint64
		if err := conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		sum += n
	}
	return sum
}

// drained waits until the stream holds no message: everything written and acknowledged.
func (p *pipeline) drained(t *testing.T) {
	t.Helper()
	meshtest.Eventually(t, 15*time.Second, func() bool { return p.inStream(t) == 0 }, "the writer did not acknowledge every batch")
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

func TestEventsLandOnceEvenWhenRetried(t *testing.T) {
	p := newPipeline(t)
	p.publish(t, "b1", ids("a", 100)...)
	p.publish(t, "b1", ids("a", 100)...) // the same batch again: dropped by the stream
	p.publish(t, "b2", ids("a", 50)...)  // a client retry of half of it in another batch
	p.publish(t, "b3", ids("b", 30)...)
	p.start(t, 0)
	p.waitFor(t, `SELECT count() FROM events WHERE tenant_id != ''`, 130)
	p.settle(t)
	if n := p.count(t, `SELECT uniqExact(event_id) FROM events WHERE tenant_id != ''`); n != 130 {
		t.Fatalf("distinct events = %d, want 130", n)
	}
	// The retry arrived in the same insert block, where the writer drops it: not even the raw
	// table or the rollup (which merges never collapse) holds it twice.
	if n := p.count(t, `SELECT count() FROM events WHERE tenant_id != ''`); n != 130 {
		t.Fatalf("raw rows = %d, want 130", n)
	}
	if n := p.count(t, `SELECT countMerge(events) FROM events_hourly`); n != 130 {
		t.Fatalf("rollup counts %d events, want 130", n)
	}
}

func TestCrashBetweenInsertAndAckDoesNotDuplicate(t *testing.T) {
	p := newPipeline(t)
	for i := 0; i < 5; i++ {
		p.publish(t, fmt.Sprint("batch-", i), ids(fmt.Sprint("e", i), 20)...)
	}
	// The first writer inserts, then "crashes" before acknowledging anything.
	done, _ := p.start(t, 1)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("writer did not insert")
	}
	if n := p.count(t, `SELECT count() FROM events WHERE tenant_id != ''`); n != 100 {
		t.Fatalf("after the first insert: %d rows, want 100", n)
	}
	// The stream redelivers everything to the next writer, which must skip it.
	p.publish(t, "batch-5", ids("e5", 20)...)
	p.start(t, 0)
	p.waitFor(t, `SELECT count() FROM events WHERE tenant_id != ''`, 120)
	// Everything is acknowledged: nothing can be redelivered, so nothing further can arrive.
	meshtest.Eventually(t, 15*time.Second, func() bool {
		c, err := p.admin.Consumer(context.Background(), natsjs.StreamName, writer.ConsumerName)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "the writer did not acknowledge every batch")
	p.settle(t)
	if n := p.count(t, `SELECT count() FROM events WHERE tenant_id != ''`); n != 120 {
		t.Fatalf("raw rows = %d after redelivery, want 120 (no duplicates even before merges)", n)
	}
	// The rollup equals the raw table: the redelivered batches were not inserted again.
	if n := p.count(t, `SELECT countMerge(events) FROM events_hourly`); n != 120 {
		t.Fatalf("rollup counts %d events after redelivery, want 120", n)
	}
	if n := p.count(t, `SELECT uniqExactMerge(users) FROM events_hourly`); n != 1 {
		t.Fatalf("rollup counts %d users, want 1", n)
	}
}

func TestPoisonMessagesGoToTheDeadLetterStream(t *testing.T) {
	p := newPipeline(t)
	ctx := context.Background()
	if _, err := natsjs.PublishPart(ctx, p.js, "t1", 0, "poison", []byte("not a batch"), nil); err != nil {
		t.Fatal(err)
	}
	p.publish(t, "good", ids("g", 10)...)
	p.start(t, 0)
	p.waitFor(t, `SELECT count() FROM events WHERE tenant_id != ''`, 10)
	dlq, err := p.admin.Stream(ctx, natsjs.DeadLetterName)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := dlq.GetMsg(ctx, 1)
	if err != nil {
		t.Fatalf("dead-letter stream: %v", err)
	}
	if string(msg.Data) != "not a batch" || msg.Header.Get("Cm-Reason") == "" {
		t.Fatalf("dead letter = %q, reason %q", msg.Data, msg.Header.Get("Cm-Reason"))
	}
	if got, want := msg.Header.Get("Cm-Subject"), natsjs.Subject("t1", 0); got != want {
		t.Errorf("dead letter's Cm-Subject = %q, want %q (its tenant, for an erasure)", got, want)
	}
}

// A recreated stream starts again at sequence 1, below the watermark of the old one: its
// batches must still be written, not skipped as already stored.
func TestRecreatedStreamIsNotSkipped(t *testing.T) {
	p := newPipeline(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		p.publish(t, fmt.Sprint("old-", i), ids(fmt.Sprint("o", i), 10)...)
	}
	_, stop := p.start(t, 0)
	p.waitFor(t, `SELECT count() FROM events WHERE tenant_id != ''`, 30)
	stop()
	if err := p.admin.DeleteStream(ctx, natsjs.StreamName); err != nil {
		t.Fatal(err)
	}
	if err := natsjs.EnsureStreams(ctx, p.js, natsjs.DefaultStream); err != nil {
		t.Fatal(err)
	}
	p.publish(t, "new-0", ids("n", 10)...) // sequence 1 again
	p.start(t, 0)
	p.waitFor(t, `SELECT count() FROM events WHERE tenant_id != ''`, 40)
	p.settle(t)
	if n := p.count(t, `SELECT countMerge(events) FROM events_hourly`); n != 40 {
		t.Fatalf("rollup counts %d events, want 40", n)
	}
}

// A batch whose events name another tenant than its subject (a hand-made message on another
// tenant's subject) is dead-lettered with the reason and stored for neither tenant.
func TestBatchOnAnotherTenantsSubjectIsDeadLettered(t *testing.T) {
	p := newPipeline(t)
	ctx := context.Background()
	now := time.Now()
	forged := &ingestv1.AcceptedBatch{Events: []*ingestv1.AcceptedEvent{{
		Event:    &ingestv1.Event{EventId: "forged", Type: ingestv1.EventType_EVENT_TYPE_CONVERSION, UserId: "u", CampaignId: "c1"},
		TenantId: "tenant-a", ReceivedAt: timestamppb.New(now), CorrectedTime: timestamppb.New(now),
	}}}
	data, _ := proto.Marshal(forged)
	if _, err := natsjs.PublishPart(ctx, p.js, "tenant-b", natsjs.Partition("tenant-a", "u"), "forged", data, nil); err != nil {
		t.Fatal(err)
	}
	p.publish(t, "good", ids("g", 10)...) // tenant t1 on events.t1
	p.start(t, 0)
	p.waitFor(t, `SELECT count() FROM events WHERE tenant_id = 't1'`, 10)
	p.settle(t)
	if n := p.count(t, `SELECT count() FROM events WHERE tenant_id IN ('tenant-a', 'tenant-b')`); n != 0 {
		t.Fatalf("%d rows stored from the forged batch, want 0", n)
	}
	if reason := firstDeadLetterReason(t, p.streams); !strings.Contains(reason, "tenant mismatch") || !strings.Contains(reason, "tenant-a") {
		t.Fatalf("dead letter reason %q, want a tenant mismatch naming tenant-a", reason)
	}
}

// firstDeadLetterReason is the Cm-Reason of the first message of the dead-letter stream.
func firstDeadLetterReason(t *testing.T, s *streams) string {
	t.Helper()
	ctx := context.Background()
	dlq, err := s.admin.Stream(ctx, natsjs.DeadLetterName)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := dlq.GetMsg(ctx, 1)
	if err != nil {
		t.Fatalf("dead-letter stream: %v", err)
	}
	return msg.Header.Get("Cm-Reason")
}

// A client retry of an event in another batch, published 1 s, 5 min or 1 h (by the writer's
// clock) after the first batch was written, is stored once: the raw table counts it once
// without FINAL, and so does the rollup, as do the store's raw and rollup queries — also when
// the writer restarted in between (its filter is rebuilt from ClickHouse).
func TestRetriedEventInAnotherBatchIsStoredOnce(t *testing.T) {
	for _, after := range []time.Duration{time.Second, 5 * time.Minute, time.Hour} {
		for _, restart := range []bool{false, true} {
			t.Run(fmt.Sprintf("after=%s/restart=%t", after, restart), func(t *testing.T) {
				p := newPipeline(t)
				clock := meshtest.NewClock(time.Now())
				p.clock = clock.Now
				first := clock.Now()
				p.publishEvents(t, "t1", "b1", event("e1", "u", first))
				_, stop := p.start(t, 0)
				p.waitFor(t, `SELECT count() FROM events WHERE tenant_id != ''`, 1)
				clock.Advance(after)
				if restart {
					stop()
					p.start(t, 0)
				}
				// Another message id, so the stream keeps it: the same event (its own time, received
				// again now) and a new one.
				retry := event("e1", "u", first)
				retry.ReceivedAt = timestamppb.New(clock.Now())
				p.publishEvents(t, "t1", "b2", retry, event("e2", "u", clock.Now()))
				p.drained(t)
				p.settle(t)
				if n := p.count(t, `SELECT count() FROM events WHERE tenant_id != ''`); n != 2 {
					t.Errorf("raw rows = %d, want 2", n)
				}
				if n := p.count(t, `SELECT countMerge(events) FROM events_hourly`); n != 2 {
					t.Errorf("rollup counts %d events, want 2", n)
				}
				q := clickhouse.NewQueries(p.conn, p.conn, clickhouse.DefaultQueryLimits)
				for _, rollup := range []bool{false, true} {
					rows, err := q.Aggregate(context.Background(), analytics.Query{TenantID: "t1", Start: first.Truncate(time.Hour),
						End: clock.Now().Truncate(time.Hour).Add(time.Hour), Rollup: rollup, Total: true})
					if err != nil {
						t.Fatal(err)
					}
					if len(rows) != 2 || rows[1].Events != 2 || rows[1].UniqueUsers != 1 {
						t.Errorf("rollup %v: %+v, want 2 events of 1 user", rollup, rows)
					}
				}
			})
		}
	}
}

// Past the dedup window a copy of an event is stored again, as the writer's documentation says:
// the writer lets ClickHouse drop the keys of events received before the window (event_ids'
// days), and its filter forgets them, so nothing tells the copy from a new event.
func TestCopyPastTheDedupWindowIsStoredAgain(t *testing.T) {
	p := newPipeline(t)
	clock := meshtest.NewClock(time.Now())
	p.clock, p.window = clock.Now, 24*time.Hour
	first := clock.Now()
	p.publishEvents(t, "t1", "b1", event("e1", "u", first))
	p.start(t, 0)
	p.waitFor(t, `SELECT count() FROM event_ids_local`, 1)
	// Three days on: the day e1 was received ends more than the window (and event_ids' day of
	// margin) ago, and the writer drops it within its next rounds.
	clock.Advance(72 * time.Hour)
	p.waitFor(t, `SELECT count() FROM event_ids_local`, 0)
	retry := event("e1", "u", first)
	retry.ReceivedAt = timestamppb.New(clock.Now())
	p.publishEvents(t, "t1", "b2", retry)
	p.drained(t)
	p.settle(t)
	if n := p.count(t, `SELECT count() FROM events WHERE tenant_id = 't1' AND event_id = 'e1'`); n != 2 {
		t.Errorf("raw rows of e1 = %d, want 2: a copy past the window is stored again", n)
	}
	if n := p.count(t, `SELECT countMerge(events) FROM events_hourly WHERE tenant_id = 't1'`); n != 2 {
		t.Errorf("rollup counts %d events, want 2", n)
	}
}
