package writer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

// tenantEvent is an impression of tenant's user in campaign at time at.
func tenantEvent(tenant, id, user, campaign string, at time.Time) *ingestv1.AcceptedEvent {
	return &ingestv1.AcceptedEvent{
		Event:    &ingestv1.Event{EventId: id, Type: ingestv1.EventType_EVENT_TYPE_IMPRESSION, UserId: user, CampaignId: campaign},
		TenantId: tenant, ReceivedAt: timestamppb.New(at), CorrectedTime: timestamppb.New(at),
	}
}

// publishOne publishes e alone in a batch on its partition's subject, as ingest does.
func (s *streams) publishOne(ctx context.Context, e *ingestv1.AcceptedEvent) error {
	data, _ := proto.Marshal(&ingestv1.AcceptedBatch{Events: []*ingestv1.AcceptedEvent{e}})
	_, err := natsjs.PublishPart(ctx, s.js, e.GetTenantId(), natsjs.Partition(e.GetTenantId(), e.GetEvent().GetUserId()), e.GetTenantId()+"/"+e.GetEvent().GetEventId(), data, nil)
	return err
}

// waitAll waits until q's count summed over the shards is want.
func (p *pipeline) waitAll(t *testing.T, q string, want uint64) {
	t.Helper()
	var n uint64
	if !meshtest.Within(30*time.Second, func() bool { n = p.countAll(t, q); return n == want }) {
		t.Fatalf("%s = %d, want %d (messages in the stream: %d)", q, n, want, p.inStream(t))
	}
}

func (p *pipeline) tenantCount(t *testing.T, tenant string) uint64 {
	t.Helper()
	return p.countAll(t, fmt.Sprintf(`SELECT count() FROM events_local WHERE tenant_id = '%s'`, tenant))
}

// A raised fence holds back the fenced tenant's events, and only them: the writer acknowledges
// it, events of other tenants published after the fenced ones land meanwhile (in the same
// stream partitions, raising their watermarks), and once the fence is lifted the held-back
// events land, once each (below the watermark: Stored decides), counted once in the rollup.
func TestFenceHoldsBackOnlyTheFencedTenant(t *testing.T) {
	p := newPipeline(t)
	ctx := context.Background()
	p.start(t, 0)
	now := time.Now().UTC()
	for i := range 5 {
		for _, tenant := range []string{"t1", "t2"} {
			if err := p.publishOne(ctx, tenantEvent(tenant, fmt.Sprintf("before-%d", i), fmt.Sprintf("u%d", i), "c1", now)); err != nil {
				t.Fatal(err)
			}
		}
	}
	p.waitFor(t, `SELECT count() FROM events_local WHERE tenant_id != ''`, 10)

	fencer, err := natsjs.NewFencer(ctx, p.writerJS)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := fencer.Raise(rctx, "b1", []string{"t1"}); err != nil {
		t.Fatalf("the running writer did not acknowledge the fence: %v", err)
	}
	for i := range 5 {
		if err := p.publishOne(ctx, tenantEvent("t1", fmt.Sprintf("fenced-%d", i), fmt.Sprintf("u%d", i), "c1", now)); err != nil {
			t.Fatal(err)
		}
	}
	// t2's users of the fenced events' partitions: their inserts raise the watermarks above
	// the fenced batches, which come back late.
	for i := range 5 {
		user := ""
		for n := 0; user == ""; n++ {
			if name := fmt.Sprintf("v%d", n); natsjs.Partition("t2", name) == natsjs.Partition("t1", fmt.Sprintf("u%d", i)) {
				user = name
			}
		}
		if err := p.publishOne(ctx, tenantEvent("t2", fmt.Sprintf("after-%d", i), user, "c1", now)); err != nil {
			t.Fatal(err)
		}
	}
	p.waitFor(t, `SELECT count() FROM events_local WHERE tenant_id = 't2'`, 10)
	if n := p.tenantCount(t, "t1"); n != 5 {
		t.Fatalf("tenant t1 has %d events under the fence, want the 5 stored before it", n)
	}
	if err := fencer.Lift(ctx, "b1", []string{"t1"}); err != nil {
		t.Fatal(err)
	}
	p.waitFor(t, `SELECT count() FROM events_local WHERE tenant_id = 't1'`, 10)
	p.drained(t)
	p.settle(t)
	if n := p.count(t, `SELECT uniqExact(tenant_id, event_id) FROM events_local WHERE tenant_id != ''`); n != 20 {
		t.Fatalf("distinct events = %d, want 20", n)
	}
	if n := p.count(t, `SELECT countMerge(events) FROM events_hourly_local`); n != 20 {
		t.Fatalf("the rollup counts %d events, want 20", n)
	}
}

// A writer that starts while a fence is up honours it from its first insert and acknowledges
// it; a fence whose raiser stopped refreshing it (older than natsjs.FenceMaxAge) is ignored, so
// a dead erasure never holds a tenant's events for good.
func TestStartingWriterHonoursFencesAndIgnoresStaleOnes(t *testing.T) {
	p := newPipeline(t)
	ctx := context.Background()
	kv, err := natsjs.OpenFenceBucket(ctx, p.writerJS)
	if err != nil {
		t.Fatal(err)
	}
	put := func(tenant string, f natsjs.Fence) {
		value, _ := json.Marshal(f)
		if _, err := kv.Put(ctx, natsjs.FenceKey(tenant), value); err != nil {
			t.Fatal(err)
		}
	}
	put("t1", natsjs.Fence{ID: "live", TimeMS: time.Now().UnixMilli()})
	put("t3", natsjs.Fence{ID: "dead", TimeMS: time.Now().Add(-natsjs.FenceMaxAge - time.Minute).UnixMilli()})
	now := time.Now().UTC()
	for i, tenant := range []string{"t1", "t2", "t3"} {
		if err := p.publishOne(ctx, tenantEvent(tenant, fmt.Sprint("e", i), "u", "c1", now)); err != nil {
			t.Fatal(err)
		}
	}
	p.start(t, 0)
	p.waitFor(t, `SELECT count() FROM events_local WHERE tenant_id IN ('t2', 't3')`, 2)
	meshtest.Eventually(t, 10*time.Second, func() bool {
		e, err := kv.Get(ctx, natsjs.FenceAckKey("t1", 0))
		return err == nil && string(e.Value()) == "live"
	}, "the starting writer did not acknowledge the fence")
	if _, err := kv.Get(ctx, natsjs.FenceAckKey("t3", 0)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the writer acknowledged a stale fence: %v", err)
	}
	if n := p.tenantCount(t, "t1"); n != 0 {
		t.Fatalf("tenant t1 has %d events under the fence", n)
	}
	if err := kv.Delete(ctx, natsjs.FenceKey("t1")); err != nil {
		t.Fatal(err)
	}
	p.waitFor(t, `SELECT count() FROM events_local WHERE tenant_id = 't1'`, 1)
}

// The race the fence closes: a writer keeps inserting the tenant's events into the very hours
// an erasure rebuilds. With the fence nothing is lost and nothing counted twice — in every
// hour the rollup equals what the raw events make — and the distinct users of the hours the
// erased subject was in are down by exactly one (the events inserted meanwhile are of users
// already there). On two shards.
func TestErasureConcurrentWithWriterCountsEveryEventOnce(t *testing.T) {
	p := newShardedPipeline(t, 2)
	ctx := context.Background()
	p.start(t, 0)
	base := time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)
	// The victim and the users of even index (only ever in campaign c0, as the victim) are on
	// one shard, the others on the other: the load below inserts into the victim's hours on the
	// shard whose hours are rebuilt.
	shardOf := func(user string) int { return natsjs.Partition("t1", user) % 2 }
	users := []string{"victim"}
	for n := 0; len(users) < 8; n++ {
		want := shardOf("victim")
		if len(users)%2 == 1 {
			want = 1 - want
		}
		if name := fmt.Sprint("u", n); shardOf(name) == want {
			users = append(users, name)
		}
	}
	// Seed j is users[j % 8]'s event in campaign c<j % 2> at an hour of three; a load event
	// repeats a seed of another user than the victim with a new id: no new user in any hour.
	published := 0
	publish := func(ctx context.Context, id string, j int) error {
		at := base.Add(time.Duration(j%3)*time.Hour + time.Duration(j%50)*time.Minute)
		return p.publishOne(ctx, tenantEvent("t1", id, users[j%len(users)], fmt.Sprint("c", j%2), at))
	}
	for j := range 96 {
		if err := publish(ctx, fmt.Sprint("seed-", j), j); err != nil {
			t.Fatal(err)
		}
		published++
	}
	p.waitAll(t, `SELECT count() FROM events_local WHERE tenant_id = 't1'`, 96)
	p.settle(t)
	before := p.hourly(t, `SELECT tenant_id, campaign_id, toStartOfHour(event_time) AS hour, uniqExact(user_id) FROM events_local
		WHERE tenant_id != '' GROUP BY tenant_id, campaign_id, hour`)
	victimHours := p.hourly(t, `SELECT tenant_id, campaign_id, toStartOfHour(event_time) AS hour, count() FROM events_local
		WHERE user_id = 'victim' GROUP BY tenant_id, campaign_id, hour`)

	// Other users' events keep coming into the same hours while the erasure runs.
	// A publish is not cancelled midway (it could be stored and reported failed): the load
	// stops between publishes.
	var concurrent atomic.Int64
	var loadErr error
	loadDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := 0; ; k++ {
			select {
			case <-loadDone:
				return
			case <-time.After(5 * time.Millisecond):
			}
			j := (k%12)*8 + []int{2, 4, 6}[k%3] // a seed of a user on the victim's shard
			if loadErr = publish(ctx, fmt.Sprint("load-", k), j); loadErr != nil {
				return
			}
			concurrent.Add(1)
		}
	}()
	stopLoad := func() { close(loadDone); wg.Wait() }

	fencer, err := natsjs.NewFencer(ctx, p.writerJS)
	if err != nil {
		t.Fatal(err)
	}
	// The rebuild is held between a shard's rollup delete and its insert until the writer has
	// inserted more of the tenant's events there (as it would without the fence) or a second
	// passed.
	var paused atomic.Int32
	store := clickhouse.NewQueries(p.conn, p.conn, clickhouse.DefaultQueryLimits).WithShards(p.conns).WithRebuildPause(func(ctx context.Context, shard int) {
		paused.Add(1)
		count := func() uint64 {
			var n uint64
			_ = p.conns[shard].QueryRow(ctx, `SELECT count() FROM events_local WHERE tenant_id = 't1'`).Scan(&n)
			return n
		}
		from := count()
		// Hold the rebuild open until the writer has inserted more of the tenant (or a second
		// passed: the fence may be holding it, which is what the test checks).
		meshtest.Within(time.Second, func() bool { return count() >= from+3 })
	})
	eraser := analytics.NewEraser(store, fencer, nil, analytics.ErasureConfig{Window: 100 * time.Millisecond}, slog.New(slog.DiscardHandler), nil)
	runCtx, stopEraser := context.WithCancel(ctx)
	defer stopEraser()
	go func() { _ = eraser.Run(runCtx) }()
	eraser.Start("t1", "dsr-1", []string{"victim"})
	meshtest.Eventually(t, time.Minute, func() bool {
		st, err := eraser.Status("t1", "dsr-1")
		return err == nil && st.Done
	}, "the erasure did not finish")
	stopLoad()
	if loadErr != nil {
		t.Fatalf("publish while erasing: %v", loadErr)
	}
	st, _ := eraser.Status("t1", "dsr-1")
	if st.Counts["events"] != 12 {
		t.Fatalf("erased %d events, want the victim's 12", st.Counts["events"])
	}
	want := uint64(published) + uint64(concurrent.Load()) - 12
	p.waitAll(t, `SELECT count() FROM events_local WHERE tenant_id = 't1'`, want)
	p.drained(t)
	p.settle(t)
	if concurrent.Load() == 0 || paused.Load() == 0 {
		t.Fatalf("%d events published while the erasure ran, its rebuild paused %d times", concurrent.Load(), paused.Load())
	}
	for k, conn := range p.conns {
		raw := hourlyOf(t, conn, `SELECT tenant_id, campaign_id, toStartOfHour(event_time) AS hour, count(), uniqExact(user_id)
			FROM events_local WHERE tenant_id != '' GROUP BY tenant_id, campaign_id, hour`)
		rollup := hourlyOf(t, conn, `SELECT tenant_id, campaign_id, hour, countMerge(events), uniqExactMerge(users)
			FROM events_hourly_local GROUP BY tenant_id, campaign_id, hour`)
		if !maps.Equal(raw, rollup) {
			t.Fatalf("shard %d: the rollup %v does not count the raw events %v once each", k, rollup, raw)
		}
	}
	after := p.hourly(t, `SELECT tenant_id, campaign_id, toStartOfHour(event_time) AS hour, uniqExact(user_id) FROM events_local
		WHERE tenant_id != '' GROUP BY tenant_id, campaign_id, hour`)
	rollupUsers := p.hourly(t, `SELECT tenant_id, campaign_id, hour, uniqExactMerge(users) FROM events_hourly_local GROUP BY tenant_id, campaign_id, hour`)
	for key, n := range before {
		drop := 0
		if victimHours[key] > 0 {
			drop = 1
		}
		if after[key] != n-drop || rollupUsers[key] != n-drop {
			t.Errorf("%s: %d distinct users (rollup %d), want %d", key, after[key], rollupUsers[key], n-drop)
		}
	}
}

// An erasure whose fence a live writer does not acknowledge (it is stuck, or stopped without
// giving up its lease) waits at most its fence timeout, lifts the fence — the tenant's events
// are not held back meanwhile for good — and tries again later, saying so; once the writer is
// gone (its lease closed) the erasure completes.
func TestErasureWaitsForTheWritersBoundedly(t *testing.T) {
	p := newPipeline(t)
	ctx := context.Background()
	now := time.Now().UTC()
	for i := range 4 {
		if err := p.publishOne(ctx, tenantEvent("t1", fmt.Sprint("e", i), fmt.Sprint("u", i%2), "c1", now)); err != nil {
			t.Fatal(err)
		}
	}
	_, stopWriter := p.start(t, 0)
	p.waitAll(t, `SELECT count() FROM events_local WHERE tenant_id = 't1'`, 4)
	p.drained(t)
	stopWriter()
	stuck, err := natsjs.AcquireWriterLease(ctx, p.writerJS, 1, "stuck writer")
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	fencer, err := natsjs.NewFencer(ctx, p.writerJS)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := natsjs.OpenFenceBucket(ctx, p.writerJS)
	if err != nil {
		t.Fatal(err)
	}
	store := clickhouse.NewQueries(p.conn, p.conn, clickhouse.DefaultQueryLimits).WithShards(p.conns)
	eraser := analytics.NewEraser(store, fencer, nil, analytics.ErasureConfig{Window: 10 * time.Millisecond, FenceTimeout: 300 * time.Millisecond},
		slog.New(slog.DiscardHandler), nil)
	runCtx, stopEraser := context.WithCancel(ctx)
	defer stopEraser()
	go func() { _ = eraser.Run(runCtx) }()
	eraser.Start("t1", "r1", []string{"u0"})
	meshtest.Eventually(t, 10*time.Second, func() bool {
		st, err := eraser.Status("t1", "r1")
		if err != nil || st.Message != "waiting for the event writers to pause; trying again" {
			return false
		}
		_, err = kv.Get(ctx, natsjs.FenceKey("t1"))
		return errors.Is(err, jetstream.ErrKeyNotFound)
	}, "the erasure did not give up waiting and lift its fence")
	stuck.Close()
	meshtest.Eventually(t, 30*time.Second, func() bool {
		st, err := eraser.Status("t1", "r1")
		return err == nil && st.Done && st.Counts["events"] == 2
	}, "the erasure did not complete once the stuck writer was gone")
}

// hourly adds up the (tenant, campaign, hour, n) rows of q (over _local tables) of every shard.
func (p *pipeline) hourly(t *testing.T, q string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, conn := range p.conns {
		for k, v := range hourlyOf(t, conn, q) {
			out[k] += int(v[0])
		}
	}
	return out
}

// hourlyOf reads rows (tenant, campaign, hour, numbers…) of q on conn, by "tenant/campaign/hour".
func hourlyOf(t *testing.T, conn driver.Conn, q string) map[string][2]uint64 {
	t.Helper()
	rows, err := conn.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	out := map[string][2]uint64{}
	cols := len(rows.Columns())
	for rows.Next() {
		var tenant, campaign string
		var hour time.Time
		var n [2]uint64
		dest := []any{&tenant, &campaign, &hour, &n[0]}
		if cols > 4 {
			dest = append(dest, &n[1])
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatal(err)
		}
		out[tenant+"/"+campaign+"/"+hour.UTC().Format(time.RFC3339)] = n
	}
	return out
}
