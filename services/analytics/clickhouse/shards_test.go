package clickhouse_test

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// bulkUsers is the number of users of campaign "bulk", each with one impression: enough for
// uniqCombined to leave its exact modes for HyperLogLog, where merging states across shards
// could make a difference.
const bulkUsers = 100_000

// shardedRows is the data set of the two-shard tests, the same on every run: tenants t1, t2 and
// t3, users and anonymous subjects on all 8 stream partitions, each seen in sessions of campaigns
// c1–c4 (variants a and b; c4 none) between 2026-03-29 and 2026-04-03 — across the Berlin switch
// to summer time and a month boundary — as a view (impression), often a tap (click) and
// sometimes a purchase (conversion), a few purchases before their view; amounts in USD (c1), EUR
// (c3) or both (c2), c4 none; properties country, device, locale and app. With bulk, t1's
// campaign "bulk" adds bulkUsers users on 2026-04-01.
func shardedRows(bulk bool) []writer.Row {
	r := rand.New(rand.NewPCG(12, 2026))
	base := at("2026-03-29T00:00:00Z")
	var rows []writer.Row
	add := func(tenant, typ, name, user, anon, campaign, variant string, when time.Time, value int64, currency string, props map[string]any, c *ingestv1.EventContext) {
		e := &ingestv1.AcceptedEvent{TenantId: tenant, ReceivedAt: timestamppb.New(when), CorrectedTime: timestamppb.New(when),
			Event: &ingestv1.Event{EventId: fmt.Sprintf("%s-%d", tenant, len(rows)), Type: types[typ], Name: name, UserId: user,
				AnonymousId: anon, CampaignId: campaign, Variant: variant, Timestamp: timestamppb.New(when), Context: c}}
		if value != 0 {
			e.Event.Value = &ingestv1.Money{AmountMicros: value, Currency: currency}
		}
		if len(props) > 0 {
			e.Event.Properties, _ = structpb.NewStruct(props)
		}
		rows = append(rows, writer.Row{Event: e, Part: writer.PartOf(e), Seq: uint64(1 + len(rows)/500)})
	}
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	for ti, tenant := range []string{"t1", "t2", "t3"} {
		for u := range 40 - 12*ti {
			user, anon := fmt.Sprintf("u%02d", u), ""
			if u%7 == 3 {
				user, anon = "", fmt.Sprintf("anon-%02d", u)
			}
			props := map[string]any{}
			if country := pick("DE", "FR", "US", ""); country != "" {
				props["country"] = country
			}
			if r.IntN(3) == 0 {
				props["plan"] = pick("free", "pro")
			}
			ctx := &ingestv1.EventContext{Device: pick("ios", "android", ""), Locale: pick("de-DE", "en-US", ""), App: pick("shop", "news")}
			for range 1 + r.IntN(3) {
				campaign := pick("c1", "c2", "c3", "c4")
				variant, currency := pick("a", "b"), map[string]string{"c1": "USD", "c2": pick("USD", "EUR"), "c3": "EUR"}[campaign]
				if campaign == "c4" {
					variant = ""
				}
				spend := func() int64 {
					if currency == "" {
						return 0
					}
					return int64(r.IntN(3)) * 250
				}
				t0 := base.Add(time.Duration(r.IntN(5*24*3600)) * time.Second)
				if r.IntN(10) == 0 && currency != "" { // bought before the view: no funnel conversion in order
					add(tenant, "conversion", "purchase", user, anon, campaign, variant, t0.Add(-10*time.Minute), int64(1+r.IntN(50))*1_000_000, currency, props, ctx)
				}
				add(tenant, "impression", "view", user, anon, campaign, variant, t0, spend(), currency, props, ctx)
				if r.IntN(3) == 0 {
					continue
				}
				tap := t0.Add(time.Duration(r.IntN(50*60)) * time.Second)
				add(tenant, "click", "tap", user, anon, campaign, variant, tap, spend(), currency, props, ctx)
				if r.IntN(2) == 0 {
					value := int64(r.IntN(50)) * 1_000_000
					if currency == "" {
						value = 0 // c4's conversions have no amount
					}
					add(tenant, "conversion", "purchase", user, anon, campaign, variant, tap.Add(time.Duration(r.IntN(3*3600))*time.Second),
						value, currency, props, ctx)
				}
			}
		}
	}
	if bulk {
		at := at("2026-04-01T10:00:00Z")
		for i := range bulkUsers {
			add("t1", "impression", "view", fmt.Sprintf("bulk-%d", i), "", "bulk", "", at.Add(time.Duration(i%3600)*time.Second), 0, "", nil, nil)
		}
	}
	return rows
}

// shardedStore is the analytics store over the two shards of a cluster of throw-away servers:
// Queries entering through each shard's server (its reader), deleting on both; writers are the
// writer user's connections to the shards, in shard order.
type shardedStore struct {
	cluster  *chtest.Cluster
	db       string
	viaShard []*clickhouse.Queries
	writers  []driver.Conn
}

// newShardedStore starts two servers as the two shards of cm_analytics, migrates each as its
// shard and inserts rows as the writer does: each block into the shard of its partitions.
func newShardedStore(t *testing.T, rows []writer.Row) *shardedStore {
	t.Helper()
	ctx := context.Background()
	c := chtest.StartCluster(t, "cm_analytics", 2)
	s := &shardedStore{cluster: c, db: c.NewDatabase(t)}
	for k, addr := range c.Addrs {
		layout := clickhouse.Layout{Cluster: "cm_analytics", ShardIndex: k, ShardCount: 2}
		if err := clickhouse.MigrateShard(ctx, addr, s.db, clickhouse.User(c.Writer), layout); err != nil {
			t.Fatalf("migrate shard %d: %v", k, err)
		}
		s.writers = append(s.writers, c.Conn(t, k, s.db, c.Writer))
	}
	for _, b := range writer.Blocks(rows, 2) {
		if err := clickhouse.NewEventSink(s.writers[b.Shard]).Insert(ctx, b.Month, b.Rows, b.Commits); err != nil {
			t.Fatalf("insert into shard %d: %v", b.Shard, err)
		}
	}
	for k := range c.Addrs {
		reader, err := clickhouse.OpenReader(ctx, c.Addrs[k], s.db, clickhouse.User(c.Reader))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reader.Close() })
		s.viaShard = append(s.viaShard, clickhouse.NewQueries(reader, s.writers[0], clickhouse.DefaultQueryLimits).WithShards(s.writers))
	}
	return s
}

// onShard is the count q (over events_local or another _local table) on shard k alone.
func (s *shardedStore) onShard(t *testing.T, k int, q string) uint64 {
	t.Helper()
	return scalar(t, s.writers[k], q)
}

// oneNodeStore is the analytics store of one server holding rows: a database on the dev server.
func oneNodeStore(t *testing.T, rows []writer.Row) (*clickhouse.Queries, driver.Conn) {
	t.Helper()
	conn := open(t, nil, 0)
	if err := clickhouse.NewEventSink(conn).InsertAll(context.Background(), rows); err != nil {
		t.Fatal(err)
	}
	return newQueries(t, conn, clickhouse.DefaultQueryLimits), conn
}

// normalized is an answer of Aggregate in an order that does not depend on the server: rows
// by key (unless the query orders them, Limit), amounts by currency.
func normalized(q analytics.Query, rows []analytics.Aggregate) []analytics.Aggregate {
	out := make([]analytics.Aggregate, len(rows))
	for i, r := range rows {
		idx := make([]int, len(r.Currencies))
		for j := range idx {
			idx[j] = j
		}
		slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(r.Currencies[a], r.Currencies[b]) })
		n := r
		n.Currencies, n.ConversionValue, n.Spend = nil, nil, nil
		for _, j := range idx {
			n.Currencies = append(n.Currencies, r.Currencies[j])
			n.ConversionValue = append(n.ConversionValue, r.ConversionValue[j])
			n.Spend = append(n.Spend, r.Spend[j])
		}
		out[i] = n
	}
	if q.Limit == 0 {
		slices.SortFunc(out, func(a, b analytics.Aggregate) int {
			if a.Total != b.Total {
				if a.Total {
					return 1
				}
				return -1
			}
			return cmp.Or(cmp.Compare(a.K1, b.K1), cmp.Compare(a.K2, b.K2))
		})
	}
	return out
}

type namedQuery struct {
	name string
	q    analytics.Query
}

// equivalenceQueries are the aggregate questions the two layouts must answer alike: every
// dimension, raw and (where the rollup can answer) rollup, approximate and exact users, with
// and without the total, top-N, over whole and partial ranges, an open range (as live metrics
// ask) and several campaign selections, in UTC and zones of whole and half-hour offsets.
func equivalenceQueries() []namedQuery {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	kolkata, _ := time.LoadLocation("Asia/Kolkata")
	type scope struct {
		name       string
		start, end time.Time
		open       bool
		campaigns  []string
		wholeHours bool
	}
	scopes := []scope{
		{"whole range", at("2026-03-28T00:00:00Z"), at("2026-04-05T00:00:00Z"), false, nil, true},
		{"whole hours of c1, c2, c3, bulk", at("2026-03-30T06:00:00Z"), at("2026-04-01T18:00:00Z"), false, []string{"c1", "c2", "c3", "bulk"}, true},
		{"partial hours of c1, c2", at("2026-03-29T10:17:00Z"), at("2026-04-01T05:43:30Z"), false, []string{"c1", "c2"}, false},
		{"open range of c2", at("2026-03-31T00:00:00Z"), time.Time{}, true, []string{"c2"}, true},
	}
	type dim struct {
		d      analytics.Dimension
		key    string
		g      analytics.Granularity
		loc    *time.Location
		rollup bool // the rollup can answer it (over whole hours)
	}
	dims := []dim{
		{d: analytics.NoDimension, rollup: true}, {d: analytics.Campaign, rollup: true}, {d: analytics.CampaignVariant, rollup: true},
		{d: analytics.Variant, rollup: true}, {d: analytics.EventType, rollup: true}, {d: analytics.EventName}, {d: analytics.App},
		{d: analytics.Device}, {d: analytics.Locale}, {d: analytics.Property, key: "country"}, {d: analytics.Property, key: "plan"},
		{d: analytics.Bucket, g: analytics.Minute, loc: time.UTC},
		{d: analytics.Bucket, g: analytics.Hour, loc: time.UTC, rollup: true},
		{d: analytics.Bucket, g: analytics.Hour, loc: kolkata},
		{d: analytics.Bucket, g: analytics.Day, loc: berlin, rollup: true},
		{d: analytics.Bucket, g: analytics.Day, loc: kolkata},
	}
	var out []namedQuery
	n := 0
	for _, tenant := range []string{"t1", "t2"} {
		for _, dm := range dims {
			for _, sc := range scopes {
				for _, rollup := range []bool{false, true} {
					if rollup && (!dm.rollup || !sc.wholeHours) {
						continue
					}
					n++
					q := analytics.Query{TenantID: tenant, CampaignIDs: sc.campaigns, Start: sc.start, End: sc.end, OpenEnd: sc.open,
						Dimension: dm.d, PropertyKey: dm.key, Granularity: dm.g, Location: dm.loc, Rollup: rollup,
						ExactUsers: n%2 == 0, Total: n%3 != 0}
					if n%4 == 1 && dm.d != analytics.Bucket { // a top-N as breakdowns ask, by a metric in turn
						q.Limit, q.OrderBy = 3, analytics.Metric(n/4%7)
					}
					name := fmt.Sprintf("%s dimension %d%s gran %d %v, %s, rollup %v, exact %v, total %v, top %d by %d",
						tenant, dm.d, dm.key, dm.g, dm.loc, sc.name, rollup, q.ExactUsers, q.Total, q.Limit, q.OrderBy)
					out = append(out, namedQuery{name, q})
				}
			}
		}
	}
	return out
}

// equivalenceFunnels are the funnels the two layouts must answer alike.
func equivalenceFunnels() []analytics.FunnelQuery {
	steps := []analytics.FunnelStep{{EventName: "view"}, {EventName: "tap"}, {EventName: "purchase"}}
	inC2 := []analytics.FunnelStep{{EventName: "view", CampaignID: "c2"}, {EventName: "tap", CampaignID: "c2"}, {EventName: "purchase"}}
	var out []analytics.FunnelQuery
	for _, tenant := range []string{"t1", "t2", "t3"} {
		out = append(out,
			analytics.FunnelQuery{TenantID: tenant, Start: at("2026-03-28T00:00:00Z"), End: at("2026-04-05T00:00:00Z"), Window: 24 * time.Hour, Steps: steps},
			analytics.FunnelQuery{TenantID: tenant, Start: at("2026-03-29T10:17:00Z"), End: at("2026-04-01T05:43:30Z"), Window: time.Hour, Steps: steps},
			analytics.FunnelQuery{TenantID: tenant, Start: at("2026-03-31T00:00:00Z"), OpenEnd: true, Window: 2 * time.Hour, Steps: inC2},
			analytics.FunnelQuery{TenantID: tenant, Start: at("2026-03-28T00:00:00Z"), End: at("2026-04-05T00:00:00Z"), Window: 7 * 24 * time.Hour,
				Steps: []analytics.FunnelStep{{EventName: "view"}, {EventName: "view"}}})
	}
	return out
}

// The same accepted events, stored on the two shards of a cluster as the writer stores them
// (each subject's events on the shard of its stream partition) and on one server, give the same
// answer to every question of the store — aggregates of every dimension from the raw events and
// the rollup, with exact and approximate unique users, and funnels — whichever shard's server
// the query enters through. The approximate unique users are equal too, not only close: the
// shards' uniqCombined states merge into the state one server builds from all the users (a
// union of hashes, or the registers' maximum once in HyperLogLog mode, which campaign "bulk"
// reaches).
func TestTwoShardsAnswerAsOneNode(t *testing.T) {
	rows := shardedRows(true)
	parts := map[int]bool{}
	for _, r := range rows {
		parts[r.Part] = true
	}
	if len(parts) != natsjs.Partitions {
		t.Fatalf("the data set covers %d stream partitions, want all %d", len(parts), natsjs.Partitions)
	}
	sharded := newShardedStore(t, rows)
	single, _ := oneNodeStore(t, rows)
	for k := range 2 {
		if n := sharded.onShard(t, k, `SELECT count() FROM events_local WHERE tenant_id != ''`); n < uint64(len(rows))/3 {
			t.Fatalf("shard %d holds %d of the %d events: the data set does not test the split", k, n, len(rows))
		}
	}
	ctx := context.Background()

	// Campaign "bulk" is past uniqCombined's exact modes, or the approximate answers would
	// compare exact counts only.
	bulk := analytics.Query{TenantID: "t1", CampaignIDs: []string{"bulk"}, Start: at("2026-04-01T00:00:00Z"), End: at("2026-04-02T00:00:00Z")}
	if got, err := single.Aggregate(ctx, bulk); err != nil || len(got) != 1 || got[0].UniqueUsers == bulkUsers {
		t.Fatalf("approximate unique users of campaign bulk: %+v %v, want an estimate, not the exact %d", got, err, bulkUsers)
	}

	for _, nq := range equivalenceQueries() {
		want, err := single.Aggregate(ctx, nq.q)
		if err != nil {
			t.Fatalf("%s, one node: %v", nq.name, err)
		}
		if len(want) == 0 && nq.q.TenantID == "t1" && !nq.q.OpenEnd {
			t.Errorf("%s: no rows on one node; the data set does not test it", nq.name)
		}
		for k, q := range sharded.viaShard {
			got, err := q.Aggregate(ctx, nq.q)
			if err != nil {
				t.Fatalf("%s, two shards via shard %d: %v", nq.name, k, err)
			}
			if d := gocmp.Diff(normalized(nq.q, want), normalized(nq.q, got), cmpopts.EquateEmpty()); d != "" {
				t.Errorf("%s: two shards via shard %d answer otherwise than one node (-one node +two shards):\n%s", nq.name, k, d)
			}
		}
	}
	for _, f := range equivalenceFunnels() {
		want, err := single.Funnel(ctx, f)
		if err != nil {
			t.Fatalf("funnel %+v, one node: %v", f, err)
		}
		if f.TenantID == "t1" && (len(want) < 2 || want[len(want)-1] == 0) {
			t.Errorf("funnel %+v: %v on one node; the data set does not test it", f, want)
		}
		for k, q := range sharded.viaShard {
			got, err := q.Funnel(ctx, f)
			if err != nil {
				t.Fatalf("funnel %+v, two shards via shard %d: %v", f, k, err)
			}
			if !slices.Equal(want, got) {
				t.Errorf("funnel %s %v–%v window %s %+v: two shards via shard %d %v, one node %v", f.TenantID, f.Start, f.End, f.Window, f.Steps, k, got, want)
			}
		}
	}
}

// subjectOn is a subject of tenant t1 in rows whose events are all on shard k of two.
func subjectOn(t *testing.T, rows []writer.Row, k int) (subject string, events uint64) {
	t.Helper()
	for _, r := range rows {
		e := r.Event.GetEvent()
		if r.Event.GetTenantId() == "t1" && e.GetUserId() != "" && r.Part%2 == k {
			subject = e.GetUserId()
			break
		}
	}
	for _, r := range rows {
		if r.Event.GetTenantId() == "t1" && r.Event.GetEvent().GetUserId() == subject {
			events++
		}
	}
	if subject == "" {
		t.Fatalf("no subject of t1 on shard %d", k)
	}
	return subject, events
}

// A deletion runs on both shards (Queries.WithShards): a subject's events, all on the shard of
// its partition — here not the first, whose writer connection Queries also holds — and a time
// range's events and whole rollup hours, on both. Its status is done only when every shard's
// mutation is: while shard 2's waits (merges stopped), the status counts shard 2's rows and names
// its mutation, though shard 1 has finished. Afterwards the two shards still answer as one node
// given the same deletions.
func TestDeleteRunsOnEveryShard(t *testing.T) {
	rows := shardedRows(false)
	sharded := newShardedStore(t, rows)
	single, singleConn := oneNodeStore(t, rows)
	q := sharded.viaShard[0]
	ctx := context.Background()
	until := func(store *clickhouse.Queries, d analytics.Deletion, done bool) analytics.DeletionStatus {
		t.Helper()
		var st analytics.DeletionStatus
		meshtest.Eventually(t, 30*time.Second, func() bool {
			var err error
			if st, err = store.Delete(ctx, d); err != nil {
				t.Fatal(err)
			}
			return st.Done == done
		}, "deletion %+v: never done=%v", d, done)
		return st
	}
	countBoth := func(where string) [2]uint64 {
		t.Helper()
		return [2]uint64{sharded.onShard(t, 0, `SELECT count() FROM events_local WHERE `+where),
			sharded.onShard(t, 1, `SELECT count() FROM events_local WHERE `+where)}
	}

	// A subject on the second shard.
	subject, n := subjectOn(t, rows, 1)
	del := analytics.Deletion{TenantID: "t1", SubjectID: subject}
	st, err := q.Delete(ctx, del)
	if err != nil || st.RemainingRows != int64(n) || st.MutationID == "" {
		t.Fatalf("first call: %+v %v, want %d remaining rows and a mutation", st, err, n)
	}
	until(q, del, true)
	if got := countBoth(fmt.Sprintf("tenant_id = 't1' AND user_id = '%s'", subject)); got != [2]uint64{} {
		t.Errorf("rows of %s left on the shards after the deletion: %v", subject, got)
	}
	until(single, del, true)

	// A time range of t1 over both shards, shard 2 unable to run its mutation until merges start.
	admin := sharded.cluster.Conn(t, 1, sharded.db, sharded.cluster.Admin)
	if err := admin.Exec(ctx, `SYSTEM STOP MERGES events_local`); err != nil {
		t.Fatal(err)
	}
	rng := analytics.Deletion{TenantID: "t1", Start: at("2026-03-30T00:00:00Z"), End: at("2026-04-01T12:00:00Z")}
	inRange := `tenant_id = 't1' AND event_time >= toDateTime('2026-03-30 00:00:00', 'UTC') AND event_time < toDateTime('2026-04-01 12:00:00', 'UTC')`
	before := countBoth(inRange)
	if before[0] == 0 || before[1] == 0 {
		t.Fatalf("rows in the range per shard %v: want some on both", before)
	}
	if _, err := q.Delete(ctx, rng); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 30*time.Second, func() bool { return countBoth(inRange)[0] == 0 }, "shard 1 did not delete its rows")
	st, err = q.Delete(ctx, rng)
	if err != nil {
		t.Fatal(err)
	}
	var running string
	if err := admin.QueryRow(ctx, `SELECT mutation_id FROM system.mutations WHERE database = currentDatabase() AND table = 'events_local' AND is_done = 0`).Scan(&running); err != nil {
		t.Fatal(err)
	}
	if st.Done || st.RemainingRows != int64(before[1]) || st.MutationID != running {
		t.Errorf("shard 1 done, shard 2 waiting: status %+v, want not done, %d rows remaining and shard 2's mutation %s", st, before[1], running)
	}
	if err := admin.Exec(ctx, `SYSTEM START MERGES events_local`); err != nil {
		t.Fatal(err)
	}
	if st := until(q, rng, true); st.RemainingRows != 0 {
		t.Errorf("done with %d rows left", st.RemainingRows)
	}
	if got := countBoth(inRange); got != [2]uint64{} {
		t.Errorf("rows in the deleted range left on the shards: %v", got)
	}
	for k := range 2 {
		if n := sharded.onShard(t, k, `SELECT countMerge(events) FROM events_hourly_local WHERE tenant_id = 't1'
			AND hour >= toDateTime('2026-03-30 00:00:00', 'UTC') AND hour < toDateTime('2026-04-01 12:00:00', 'UTC')`); n != 0 {
			t.Errorf("shard %d's rollup still counts %d events in the deleted hours", k, n)
		}
	}
	until(single, rng, true)
	if n := scalar(t, singleConn, `SELECT count() FROM events WHERE `+inRange); n != 0 {
		t.Fatalf("one node kept %d rows of the range", n)
	}

	for _, nq := range []namedQuery{
		{"summary raw", analytics.Query{TenantID: "t1", Start: at("2026-03-28T00:00:00Z"), End: at("2026-04-05T00:00:00Z"), Dimension: analytics.CampaignVariant, Total: true}},
		{"summary rollup", analytics.Query{TenantID: "t1", Start: at("2026-03-28T00:00:00Z"), End: at("2026-04-05T00:00:00Z"), Dimension: analytics.CampaignVariant, Total: true, Rollup: true, ExactUsers: true}},
		{"daily series rollup", analytics.Query{TenantID: "t1", Start: at("2026-03-28T00:00:00Z"), End: at("2026-04-05T00:00:00Z"), Dimension: analytics.Bucket, Granularity: analytics.Day, Location: time.UTC, Rollup: true}},
	} {
		want, err := single.Aggregate(ctx, nq.q)
		if err != nil {
			t.Fatal(err)
		}
		got, err := q.Aggregate(ctx, nq.q)
		if err != nil {
			t.Fatal(err)
		}
		if d := gocmp.Diff(normalized(nq.q, want), normalized(nq.q, got), cmpopts.EquateEmpty()); d != "" {
			t.Errorf("%s after the deletions (-one node +two shards):\n%s", nq.name, d)
		}
	}
}
