package clickhouse_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

// policies is a PRIVACY bucket's view holding tenants' retentions in days.
func policies(t *testing.T, days map[string]int) *privacy.View {
	t.Helper()
	v := privacy.NewView(nil)
	for tenant, d := range days {
		b, err := json.Marshal(privacy.Policy{Version: 1, RetentionDays: d})
		if err != nil {
			t.Fatal(err)
		}
		v.Apply(privacy.PolicyKey(tenant), b, false)
	}
	return v
}

// Retention deletes a tenant's events older than its retention and keeps its newer ones and
// other tenants' old ones, with one mutation for every tenant due (t1: 30 days, t3: 90 days),
// only when rows are due; the deployment retention drops whole months entirely older than it
// without a mutation. Rollups keep the expired hours. Moving the clock a day expires the next
// event of t1.
func TestRetentionDeletesExpiredEventsOnly(t *testing.T) {
	conn := open(t, []ev{
		{"t1", "a1", "click", "tap", "u1", "", "c1", "", "2026-05-01T10:00:00Z", 0, "", ""},
		{"t1", "a2", "click", "tap", "u2", "", "c1", "", "2026-05-01T11:00:00Z", 0, "", ""},
		{"t1", "a3", "click", "tap", "u1", "", "c1", "", "2026-05-16T11:00:00Z", 0, "", ""}, // 30 days and an hour old
		{"t1", "a4", "click", "tap", "u1", "", "c1", "", "2026-05-16T13:00:00Z", 0, "", ""}, // 30 days less an hour
		{"t1", "a5", "click", "tap", "u3", "", "c2", "", "2026-06-10T08:00:00Z", 0, "", ""},
		{"t2", "b1", "click", "tap", "u1", "", "c1", "", "2026-05-01T10:00:00Z", 0, "", ""}, // no retention of its own
		{"t2", "b2", "click", "tap", "u1", "", "c1", "", "2026-05-02T10:00:00Z", 0, "", ""},
		{"t2", "b3", "click", "tap", "u1", "", "c1", "", "2026-01-10T10:00:00Z", 0, "", ""}, // a month older than the deployment's 120 days
		{"t3", "c1", "click", "tap", "u1", "", "c1", "", "2026-05-01T10:00:00Z", 0, "", ""}, // within 90 days
		{"t3", "c2", "click", "tap", "u1", "", "c1", "", "2026-02-20T10:00:00Z", 0, "", ""}, // February is not entirely older than 120 days
	}, 1)
	ctx := context.Background()
	count := func(q string) uint64 {
		t.Helper()
		var n uint64
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	clock := meshtest.NewClock(time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC))
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	store := clickhouse.NewRetention(conn)
	r := analytics.NewRetention([]analytics.RetentionStore{store}, policies(t, map[string]int{"t1": 30, "t3": 90}), 120, clock.Now,
		slog.New(slog.NewJSONHandler(&logs, nil)), reg)
	run := func() {
		t.Helper()
		if err := r.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		meshtest.Eventually(t, 30*time.Second, func() bool {
			running, err := store.Deleting(ctx)
			return err == nil && !running
		}, "the retention mutation did not finish")
	}
	rollup := count(`SELECT countMerge(events) FROM events_hourly`)

	run()
	for tenant, want := range map[string]uint64{"t1": 2, "t2": 2, "t3": 1} {
		if n := count(`SELECT count() FROM events WHERE tenant_id = '` + tenant + `'`); n != want {
			t.Errorf("tenant %s keeps %d events, want %d", tenant, n, want)
		}
	}
	if n := count(`SELECT count() FROM events WHERE event_id IN ('a1', 'a2', 'a3', 'b3')`); n != 0 {
		t.Errorf("%d expired events left", n)
	}
	if n := count(`SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'events_local' AND active AND partition_id = '202601'`); n != 0 {
		t.Errorf("the month 2026-01 has %d parts left, want it dropped", n)
	}
	mutations := `SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'events_local'`
	if n := count(mutations); n != 1 {
		t.Errorf("%d mutations ran, want 1 for every tenant due (the partition drop is none)", n)
	}
	// Rollups keep the expired hours; the dropped month's rows go from the raw table only.
	if n := count(`SELECT countMerge(events) FROM events_hourly`); n != rollup {
		t.Errorf("the rollup counts %d events after retention, want the %d it counted before", n, rollup)
	}
	if got := testutil.ToFloat64(r.Metrics().Mutations); got != 1 {
		t.Errorf("retention_mutations_total = %v, want 1", got)
	}
	if got := testutil.ToFloat64(r.Metrics().Dropped); got != 1 {
		t.Errorf("retention_partitions_dropped_total = %v, want 1", got)
	}
	if got := testutil.ToFloat64(r.Metrics().Expired); got != 4 {
		t.Errorf("retention_expired_rows_total = %v, want 4 (a1, a2, a3, c2)", got)
	}
	for _, msg := range []string{"retention dropped months of raw events", "retention deletion started"} {
		if !strings.Contains(logs.String(), msg) {
			t.Errorf("no log %q in %s", msg, logs.String())
		}
	}

	// Nothing more is due: no mutation.
	run()
	if n := count(mutations); n != 1 {
		t.Errorf("%d mutations after a run with nothing due, want still 1", n)
	}
	// A day later a4 has passed t1's 30 days too.
	clock.Advance(24 * time.Hour)
	run()
	if n := count(`SELECT count() FROM events WHERE tenant_id = 't1'`); n != 1 {
		t.Errorf("a day later t1 keeps %d events, want 1 (a5)", n)
	}
	if n := count(mutations); n != 2 {
		t.Errorf("%d mutations, want 2", n)
	}
	if got := testutil.ToFloat64(r.Metrics().Runs); got != 3 {
		t.Errorf("retention_runs_total = %v, want 3", got)
	}
}

// Without policies or a deployment retention a run touches nothing.
func TestRetentionKeepsEverythingByDefault(t *testing.T) {
	conn := open(t, []ev{{"t1", "a1", "click", "tap", "u1", "", "c1", "", "2020-05-01T10:00:00Z", 0, "", ""}}, 1)
	ctx := context.Background()
	r := analytics.NewRetention([]analytics.RetentionStore{clickhouse.NewRetention(conn)}, privacy.NewView(nil), 0, nil, slog.New(slog.DiscardHandler), nil)
	if err := r.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	var n uint64
	if err := conn.QueryRow(ctx, `SELECT count() FROM events WHERE tenant_id != ''`).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d events, %v; want the 1 kept", n, err)
	}
	if err := conn.QueryRow(ctx, `SELECT count() FROM system.mutations WHERE database = currentDatabase()`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d mutations, %v; want none", n, err)
	}
}

// On two shards a run starts one mutation on each for every tenant due (t1: 10 days, t2: 8
// days), and a shard whose retention mutation of the previous run still runs (merges stopped)
// gets no second one; once it has run, both shards hold only what the policies keep.
func TestRetentionRunsOneMutationPerShard(t *testing.T) {
	rows := shardedRows(false)
	s := newShardedStore(t, rows)
	ctx := context.Background()
	admin := s.cluster.Conn(t, 1, s.db, s.cluster.Admin)
	if err := admin.Exec(ctx, `SYSTEM STOP MERGES events_local`); err != nil {
		t.Fatal(err)
	}
	clock := meshtest.NewClock(time.Date(2026, 4, 10, 0, 0, 0, 0, time.UTC))
	stores := []analytics.RetentionStore{clickhouse.NewRetention(s.writers[0]), clickhouse.NewRetention(s.writers[1])}
	r := analytics.NewRetention(stores, policies(t, map[string]int{"t1": 10, "t2": 8}), 0, clock.Now, slog.New(slog.DiscardHandler), nil)
	expired := `tenant_id = 't1' AND event_time < toDateTime('2026-03-31 00:00:00', 'UTC') OR tenant_id = 't2' AND event_time < toDateTime('2026-04-02 00:00:00', 'UTC')`
	both := func(q string) [2]uint64 { return [2]uint64{s.onShard(t, 0, q), s.onShard(t, 1, q)} }
	before := both(`SELECT count() FROM events_local WHERE ` + expired)
	if before[0] == 0 || before[1] == 0 {
		t.Fatalf("expired rows per shard %v: want some on both", before)
	}
	kept := both(`SELECT count() FROM events_local WHERE tenant_id != '' AND NOT (` + expired + `)`)
	mutations := `SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'events_local'`

	if err := r.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 30*time.Second, func() bool { return s.onShard(t, 0, `SELECT count() FROM events_local WHERE `+expired) == 0 },
		"shard 1 did not delete its expired rows")
	clock.Advance(time.Hour)
	if err := r.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := both(mutations); got != [2]uint64{1, 1} {
		t.Errorf("mutations per shard after two runs, the second shard's still running: %v, want [1 1]", got)
	}
	if err := admin.Exec(ctx, `SYSTEM START MERGES events_local`); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 30*time.Second, func() bool { return s.onShard(t, 1, `SELECT count() FROM events_local WHERE `+expired) == 0 },
		"shard 2 did not delete its expired rows once merges ran")
	if got := both(`SELECT count() FROM events_local WHERE tenant_id != ''`); got != kept {
		t.Errorf("rows per shard after retention %v, want the %v not expired", got, kept)
	}
	if got := testutil.ToFloat64(r.Metrics().Expired); got != float64(before[0]+before[1]) {
		t.Errorf("retention_expired_rows_total = %v, want %d", got, before[0]+before[1])
	}
}
