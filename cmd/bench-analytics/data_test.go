package main

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

var testEnd = time.Date(2026, 3, 30, 12, 0, 0, 0, time.UTC)

func TestPlanIsDeterministic(t *testing.T) {
	cfg := config{seed: 1, events: 10_000_000, campaigns: 50, days: 7, smallTenants: 5}
	a, b := plan(cfg, testEnd), plan(cfg, testEnd.Add(59*time.Minute))
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same flags planned two data sets")
	}
	if a.InsertSQL(a.Tenants[0], 0, chunkRows) != b.InsertSQL(b.Tenants[0], 0, chunkRows) {
		t.Fatal("the same plan generated two statements")
	}
	cfg.seed = 2
	if c := plan(cfg, testEnd); reflect.DeepEqual(a.Tenants, c.Tenants) {
		t.Fatal("seeds 1 and 2 planned the same data set")
	}
	if len(a.Tenants) != 6 || a.Rows() != 10_050_000 || a.Tenants[0].Users != 200_000 {
		t.Fatalf("plan: %d tenants, %d rows, %d users", len(a.Tenants), a.Rows(), a.Tenants[0].Users)
	}
	for _, tn := range a.Tenants {
		n := 0
		for _, c := range tn.Campaigns {
			if c.Slots < 1 || c.Variants < 2 || c.Variants > 3 {
				t.Errorf("%s %s: %d slots, %d variants", tn.ID, c.ID, c.Slots, c.Variants)
			}
			n += c.Slots
		}
		if n != slots {
			t.Errorf("%s: %d lookup slots, want %d", tn.ID, n, slots)
		}
	}
}

// TestLoadIsReproducible loads the same small data set into two databases and compares
// every column; it also checks what the bench relies on: the rollup
// counts every row, and the mix, users and time range are as documented.
func TestLoadIsReproducible(t *testing.T) {
	ctx := context.Background()
	cfg := config{seed: 1, events: 40_000, campaigns: 12, days: 2, smallTenants: 1}
	d := plan(cfg, testEnd)
	var sums [2]uint64
	var conn driver.Conn
	for i := range sums {
		var err error
		conn, err = clickhouse.Open(ctx, chtest.Addr(), chtest.NewDatabase(t), clickhouse.User(chtest.Writer(t)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := load(ctx, conn, d); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, `SELECT sum(cityHash64(tenant_id, event_id, type, name, user_id, anonymous_id, campaign_id, variant,
			value_micros, currency, event_date, event_time, event_ms, client_ms, received_ms, arrayStringConcat(prop_keys, ','),
			arrayStringConcat(prop_values, ','), ip, user_agent, locale, app, device, source, stream_seq)) FROM events`).Scan(&sums[i]); err != nil {
			t.Fatal(err)
		}
	}
	if sums[0] != sums[1] {
		t.Fatalf("two loads of seed 1 differ: checksums %d and %d", sums[0], sums[1])
	}

	var rows, rolled, users, campaigns uint64
	var first, last time.Time
	if err := conn.QueryRow(ctx, "SELECT count(), (SELECT toUInt64(countMerge(events)) FROM events_hourly) FROM events WHERE tenant_id != ''").Scan(&rows, &rolled); err != nil {
		t.Fatal(err)
	}
	if rows != uint64(d.Rows()) || rolled != rows {
		t.Errorf("%d rows, rollup counts %d, want %d", rows, rolled, d.Rows())
	}
	if err := conn.QueryRow(ctx, `SELECT uniqExact(if(user_id != '', user_id, anonymous_id)), uniqExact(campaign_id), min(event_time), max(event_time)
		FROM events WHERE tenant_id = ?`, bigTenant).Scan(&users, &campaigns, &first, &last); err != nil {
		t.Fatal(err)
	}
	if users != uint64(d.Tenants[0].Users) || campaigns != uint64(cfg.campaigns) {
		t.Errorf("big tenant: %d users, %d campaigns; want %d and %d", users, campaigns, d.Tenants[0].Users, cfg.campaigns)
	}
	if first.Before(d.Begin()) || !last.Before(d.End) {
		t.Errorf("events from %s to %s, outside [%s, %s)", first, last, d.Begin(), d.End)
	}
	var impressions, clicks, conversions float64
	if err := conn.QueryRow(ctx, `SELECT countIf(type = 'impression') / count(), countIf(type = 'click') / count(), countIf(type = 'conversion') / count()
		FROM events WHERE tenant_id = ?`, bigTenant).Scan(&impressions, &clicks, &conversions); err != nil {
		t.Fatal(err)
	}
	if impressions < 0.87 || impressions > 0.93 || clicks < 0.06 || clicks > 0.10 || conversions < 0.012 || conversions > 0.03 {
		t.Errorf("mix: %.3f impressions, %.3f clicks, %.3f conversions; want about 0.90, 0.08, 0.02", impressions, clicks, conversions)
	}
	// Sessions put a purchase after a tap after a view: the funnel has something to find.
	var purchasers uint64
	if err := conn.QueryRow(ctx, `SELECT count() FROM (SELECT user_id, windowFunnel(86400)(event_time, name = 'view', name = 'tap', name = 'purchase') AS level
		FROM events WHERE tenant_id = ? GROUP BY user_id) WHERE level = 3`, bigTenant).Scan(&purchasers); err != nil {
		t.Fatal(err)
	}
	if purchasers == 0 {
		t.Error("no user went view → tap → purchase")
	}
}

// TestPrepareLoadsTheNewLayout runs the bench's preparation on a small data set: the load into
// events_local, its commit rows, the merge of events_local and events_hourly_local (the
// Distributed tables cannot be optimized), and a -keep run reusing it.
func TestPrepareLoadsTheNewLayout(t *testing.T) {
	ctx := context.Background()
	b := &bench{cfg: config{seed: 1, events: 40_000, campaigns: 12, days: 2, smallTenants: 1, database: chtest.NewDatabase(t)}}
	d, err := b.prepare(ctx, chtest.Addr())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := clickhouse.Open(ctx, chtest.Addr(), b.cfg.database, clickhouse.User(chtest.Writer(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	// One commit row per block of BatchRows events of a tenant, partition and month, numbered
	// 1…n, each naming its own sequence; every partition and month holding events has some.
	var blocks, commits, seqs, maxSeq, uncommitted, named uint64
	if err := conn.QueryRow(ctx, `SELECT
		(SELECT count() FROM (SELECT DISTINCT tenant_id, intDiv(toUInt64(substring(event_id, 4)), ?), stream_part, toStartOfMonth(event_date)
			FROM events WHERE tenant_id != '')),
		(SELECT count() FROM events WHERE tenant_id = ''),
		(SELECT uniqExact(stream_seq) FROM events WHERE tenant_id = ''),
		(SELECT max(stream_seq) FROM events WHERE tenant_id = ''),
		(SELECT count() FROM (SELECT DISTINCT stream_part, toStartOfMonth(event_date) AS m FROM events WHERE tenant_id != '')
			WHERE (stream_part, m) NOT IN (SELECT stream_part, event_date FROM events WHERE tenant_id = '')),
		(SELECT countIf(commit_seqs = [stream_seq] AND event_id = 'commit' AND campaign_id = '') FROM events WHERE tenant_id = '')`,
		batchRows()).Scan(&blocks, &commits, &seqs, &maxSeq, &uncommitted, &named); err != nil {
		t.Fatal(err)
	}
	if commits == 0 || commits != blocks || seqs != commits || maxSeq != commits || named != commits || uncommitted != 0 {
		t.Fatalf("%d commit rows (%d sequences up to %d, %d well formed) for %d blocks' partitions and months; %d partitions and months without one",
			commits, seqs, maxSeq, named, blocks, uncommitted)
	}
	// The writer reads them as its watermarks: the highest sequence per partition and month.
	marks, err := clickhouse.NewEventSink(conn).Settle(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var highest uint64
	for _, w := range marks {
		highest = max(highest, w)
	}
	if len(marks) == 0 || highest != maxSeq {
		t.Fatalf("watermarks %v: want the commit rows' (highest %d)", marks, maxSeq)
	}
	// The rollup counts the events only.
	var rolled uint64
	if err := conn.QueryRow(ctx, "SELECT toUInt64(countMerge(events)) FROM events_hourly").Scan(&rolled); err != nil {
		t.Fatal(err)
	}
	if rolled != uint64(d.Rows()) {
		t.Fatalf("the rollup counts %d events, want %d", rolled, d.Rows())
	}

	b.cfg.keep, b.results = true, nil
	if _, err := b.prepare(ctx, chtest.Addr()); err != nil {
		t.Fatal(err)
	}
	if len(b.results) != 1 || b.results[0].Name != "data set: rows (reused with -keep)" {
		t.Fatalf("-keep on the loaded data set: %+v, want it reused", b.results)
	}
}
