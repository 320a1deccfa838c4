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
	if a.insertSQL(a.Tenants[0], 0, chunkRows) != b.insertSQL(b.Tenants[0], 0, chunkRows) {
		t.Fatal("the same plan generated two statements")
	}
	cfg.seed = 2
	if c := plan(cfg, testEnd); reflect.DeepEqual(a.Tenants, c.Tenants) {
		t.Fatal("seeds 1 and 2 planned the same data set")
	}
	if len(a.Tenants) != 6 || a.rows() != 10_050_000 || a.Tenants[0].Users != 200_000 {
		t.Fatalf("plan: %d tenants, %d rows, %d users", len(a.Tenants), a.rows(), a.Tenants[0].Users)
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
	if err := conn.QueryRow(ctx, "SELECT count(), (SELECT toUInt64(countMerge(events)) FROM events_hourly) FROM events").Scan(&rows, &rolled); err != nil {
		t.Fatal(err)
	}
	if rows != uint64(d.rows()) || rolled != rows {
		t.Errorf("%d rows, rollup counts %d, want %d", rows, rolled, d.rows())
	}
	if err := conn.QueryRow(ctx, `SELECT uniqExact(if(user_id != '', user_id, anonymous_id)), uniqExact(campaign_id), min(event_time), max(event_time)
		FROM events WHERE tenant_id = ?`, bigTenant).Scan(&users, &campaigns, &first, &last); err != nil {
		t.Fatal(err)
	}
	if users != uint64(d.Tenants[0].Users) || campaigns != uint64(cfg.campaigns) {
		t.Errorf("big tenant: %d users, %d campaigns; want %d and %d", users, campaigns, d.Tenants[0].Users, cfg.campaigns)
	}
	if first.Before(d.begin()) || !last.Before(d.End) {
		t.Errorf("events from %s to %s, outside [%s, %s)", first, last, d.begin(), d.End)
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
