package writer_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer/writerfault"
)

// The rows of events, not the writer's commit rows (tenant_id ”).
const (
	rawEvents    = `SELECT count() FROM events_local WHERE tenant_id != ''`
	rolledEvents = `SELECT countMerge(events) FROM events_hourly_local`
)

// usersOn returns n users of tenant t1 whose stream partitions are on shard of shards.
func usersOn(shard, shards, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		u := fmt.Sprintf("u%d", i)
		if natsjs.Partition("t1", u)%shards == shard {
			out = append(out, u)
		}
	}
	return out
}

// waitDone waits for a writer that crashes by itself.
func waitDone(t *testing.T, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the writer did not reach the injected crash")
	}
}

// A set whose events fall in two months is two inserts (one part each, committed one after the
// other). A writer that dies between them has stored the first month only; the next writer
// inserts the second month's rows and not the first's again: the watermark is per month.
func TestCrashBetweenTheMonthBlocksOfASet(t *testing.T) {
	p := newPipeline(t)
	now := time.Now().UTC()
	lastMonth := time.Date(now.Year(), now.Month(), 1, 12, 0, 0, 0, time.UTC).AddDate(0, 0, -10)
	var events []*ingestv1.AcceptedEvent
	for i := range 10 {
		events = append(events, event(fmt.Sprint("old-", i), "u", lastMonth), event(fmt.Sprint("new-", i), "u", now))
	}
	p.publishEvents(t, "t1", "b1", events...)
	done, _ := p.start(t, 1)
	waitDone(t, done)
	if n := p.count(t, rawEvents); n != 10 {
		t.Fatalf("after the crash: %d rows, want the 10 of the first month's block", n)
	}
	p.start(t, 0)
	p.drained(t)
	p.settle(t)
	for _, q := range []string{rawEvents, `SELECT uniqExact(event_id) FROM events_local WHERE tenant_id != ''`, rolledEvents} {
		if n := p.count(t, q); n != 20 {
			t.Errorf("%s = %d, want 20", q, n)
		}
	}
}

// Each shard's rows are one insert into its database. A writer that dies after the first
// shard's insert and before the second's leaves the second shard without them; the next writer
// inserts them there and not again on the first. Each shard holds only its partitions' rows.
func TestCrashBetweenTheShardBlocksOfASet(t *testing.T) {
	p := newShardedPipeline(t, 2)
	now := time.Now()
	var events []*ingestv1.AcceptedEvent
	for shard := range 2 {
		for i, u := range usersOn(shard, 2, 5) {
			events = append(events, event(fmt.Sprintf("s%d-%d", shard, i), u, now))
		}
	}
	p.publishEvents(t, "t1", "b1", events...)
	done, _ := p.start(t, 1) // crashes after the insert into shard 0
	waitDone(t, done)
	if got := [2]uint64{p.count(t, rawEvents), countOn(t, p, 1, rawEvents)}; got != [2]uint64{5, 0} {
		t.Fatalf("after the crash: rows on the shards %v, want [5 0]", got)
	}
	p.start(t, 0)
	p.drained(t)
	p.settle(t)
	for shard := range 2 {
		if n := countOn(t, p, shard, rawEvents); n != 5 {
			t.Errorf("shard %d holds %d rows, want 5", shard, n)
		}
		if n := countOn(t, p, shard, rolledEvents); n != 5 {
			t.Errorf("shard %d's rollup counts %d events, want 5", shard, n)
		}
		if n := countOn(t, p, shard, fmt.Sprintf(`SELECT count() FROM events_local WHERE stream_part %% 2 != %d`, shard)); n != 0 {
			t.Errorf("shard %d holds %d rows of the other shard's partitions", shard, n)
		}
	}
}

func countOn(t *testing.T, p *pipeline, shard int, q string) uint64 {
	t.Helper()
	var n uint64
	if err := p.conns[shard].QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A batch redelivered late, below the watermark of its partition and month that newer sets
// raised, is not taken as stored: the commits show it missing, so it is inserted — once: when it
// comes again after that insert (a crash before the ack), the commits show it stored.
func TestLateBatchBelowTheWatermarkIsStoredOnce(t *testing.T) {
	p := newPipeline(t)
	// A first writer records the stream's incarnation (offset 0) and stops.
	_, stop := p.start(t, 0)
	meshtest.Eventually(t, 15*time.Second, func() bool { return p.count(t, `SELECT count() FROM writer_epochs`) == 1 }, "the writer did not start")
	stop()
	now := time.Now()
	p.publishEvents(t, "t1", "late", event("e1", "u", now), event("e2", "u", now)) // sequence 1
	// Newer sets of the partition raised its watermark past the batch (they are in no stream).
	part := natsjs.Partition("t1", "u")
	month := writer.MonthOf(now)
	if err := clickhouse.NewEventSink(p.conn).Insert(context.Background(), month, nil, []writer.Commit{{Part: part, Seqs: []uint64{5}}}); err != nil {
		t.Fatal(err)
	}
	done, _ := p.start(t, 1)
	waitDone(t, done)
	if n := p.count(t, rawEvents); n != 2 {
		t.Fatalf("the late batch stored %d rows, want 2", n)
	}
	p.start(t, 0)
	p.drained(t)
	p.settle(t)
	if got := [2]uint64{p.count(t, rawEvents), p.count(t, rolledEvents)}; got != [2]uint64{2, 2} {
		t.Errorf("raw rows and rollup count %v, want 2 each", got)
	}
}

// An insert whose answer is lost although it landed is looked up (once no insert runs) before
// it is tried again: it is not inserted twice.
func TestInsertWhoseAnswerIsLostIsNotRepeated(t *testing.T) {
	p := newShardedPipeline(t, 2)
	now := time.Now()
	var events []*ingestv1.AcceptedEvent
	for shard := range 2 {
		for i, u := range usersOn(shard, 2, 3) {
			events = append(events, event(fmt.Sprintf("s%d-%d", shard, i), u, now))
		}
	}
	p.publishEvents(t, "t1", "b1", events...)
	var lost []*writerfault.Lost
	p.startWith(t, func(_ int, sink writer.Sink, _ func()) writer.Sink {
		l := writerfault.LoseAnswers(sink, 1)
		lost = append(lost, l)
		return l
	})
	p.drained(t)
	p.settle(t)
	for shard := range 2 {
		if got := [2]uint64{countOn(t, p, shard, rawEvents), countOn(t, p, shard, rolledEvents)}; got != [2]uint64{3, 3} {
			t.Errorf("shard %d: raw rows and rollup count %v, want 3 each", shard, got)
		}
		if n := lost[shard].Inserts(); n != 1 {
			t.Errorf("shard %d: %d inserts, want 1 (the lost answer's insert had landed)", shard, n)
		}
	}
}

// A message on a partition's subject (events.<tenant>.<p>) holding an event of another
// partition is forged or broken: dead-lettered, stored for no partition. Events on the right
// partition's subject, and on the subject of before partitions (events.<tenant>), are stored.
func TestBatchWithAnEventOfAnotherPartitionIsDeadLettered(t *testing.T) {
	p := newPipeline(t)
	ctx := context.Background()
	now := time.Now()
	part := natsjs.Partition("t1", "u")
	publish := func(subject, msgID string, events ...*ingestv1.AcceptedEvent) {
		data, _ := proto.Marshal(&ingestv1.AcceptedBatch{Events: events})
		if _, err := p.js.Publish(ctx, subject, data, jetstream.WithMsgID(msgID)); err != nil {
			t.Fatal(err)
		}
	}
	other := usersOn((part+1)%natsjs.Partitions, natsjs.Partitions, 1)[0]
	publish(natsjs.Subject("t1", part), "forged", event("f1", "u", now), event("f2", other, now))
	publish(natsjs.Subject("t1", part), "good", event("g1", "u", now))
	p.publishEvents(t, "t1", "legacy", event("l1", other, now))
	p.start(t, 0)
	p.drained(t)
	p.settle(t)
	if n := p.count(t, `SELECT count() FROM events_local WHERE event_id IN ('f1', 'f2')`); n != 0 {
		t.Errorf("%d rows stored from the forged batch, want 0", n)
	}
	if n := p.count(t, `SELECT count() FROM events_local WHERE event_id IN ('g1', 'l1')`); n != 2 {
		t.Errorf("%d rows of the good batches stored, want 2", n)
	}
	if reason := firstDeadLetterReason(t, p.streams); !strings.Contains(reason, "partition mismatch") || !strings.Contains(reason, "event 1") {
		t.Errorf("dead letter reason %q, want a partition mismatch naming event 1", reason)
	}
}

// Client retries in another batch, after a restart, of events stored on two shards: the
// restarted writer rebuilds its filter from both shards' event_ids and confirms each key on its
// partition's shard, so no shard stores one twice — raw rows and rollups, without FINAL.
func TestRetriesAfterARestartAreStoredOnceOnEveryShard(t *testing.T) {
	p := newShardedPipeline(t, 2)
	now := time.Now()
	var events []*ingestv1.AcceptedEvent
	for shard := range 2 {
		for i, u := range usersOn(shard, 2, 4) {
			events = append(events, event(fmt.Sprintf("s%d-%d", shard, i), u, now))
		}
	}
	p.publishEvents(t, "t1", "b1", events...)
	_, stop := p.start(t, 0)
	p.drained(t)
	stop()
	p.start(t, 0)
	p.publishEvents(t, "t1", "b2", append(events, event("new", "u0", now))...) // another message id: the stream keeps it
	p.drained(t)
	p.settle(t)
	if got := [2]uint64{p.countAll(t, rawEvents), p.countAll(t, rolledEvents)}; got != [2]uint64{9, 9} {
		t.Errorf("raw rows and rollup count over the shards %v, want 9 each", got)
	}
	for shard := range 2 {
		if n := countOn(t, p, shard, `SELECT toUInt64(count() - uniqExact(event_id)) FROM events_local WHERE tenant_id != ''`); n != 0 {
			t.Errorf("shard %d stores %d events twice", shard, n)
		}
	}
}
