package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5"

	"github.com/campaignmesh/campaignmesh/internal/benchdata"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
)

func TestMetricSum(t *testing.T) {
	text := `# HELP cm_analytics_erasure_mutations_total Mutations.
# TYPE cm_analytics_erasure_mutations_total counter
cm_analytics_erasure_mutations_total{table="events_local"} 3
cm_analytics_erasure_mutations_total{table="events_hourly_local"} 2
cm_analytics_erasure_mutations_total_other 100
cm_analytics_erasure_mutations 7
`
	if v, ok := metricSum(text, mutationsMetric); !ok || v != 5 {
		t.Fatalf("sum = %v, %v; want 5", v, ok)
	}
	if _, ok := metricSum("up 1\n", mutationsMetric); ok {
		t.Fatal("found a metric that is not there")
	}
}

func TestParseMemory(t *testing.T) {
	m, err := parseMemory("Name:\tdsr\nVmPeak:\t 1000 kB\nVmHWM:\t   52224 kB\nVmRSS:\t   40960 kB\n")
	if err != nil || m.hwm != 52224 || m.rss != 40960 {
		t.Fatalf("%+v, %v", m, err)
	}
	if _, err := parseMemory("Name:\tdsr\n"); err == nil {
		t.Fatal("no error for a status without memory lines")
	}
}

// TestDryRun runs the bench on a small data set up to the requests: auth on its own database
// (its bootstrap tenant is the data set's big tenant), the data set loaded and copied, the
// export subject added, the subjects picked, analytics answering the admin for that tenant,
// and dsr when this checkout has it; then again with -keep, reusing the data set and auth;
// then with -keep and a key that does not open auth's kept database.
func TestDryRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the services")
	}
	t.Chdir("../..") // the bench runs from the repository root (go build, deploy/nats.conf)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	db := "bench_dsr_test_" + hex.EncodeToString(b)
	t.Cleanup(func() { dropDatabases(t, db) })
	cfg := config{data: benchdata.Config{Events: 20_000, SmallTenants: 1, Campaigns: 10, Days: 1, Seed: 1},
		database: db, stateDir: t.TempDir(), singleRuns: 3, erasures: 20, exportEvents: 1000, timeout: time.Minute, dryRun: true}

	first := &bench{cfg: cfg}
	if err := first.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := find(first.results, "data set: rows loaded"); r == nil || r.Value != 30_000 {
		t.Fatalf("first run: %+v, want the data set loaded", first.results)
	}
	if r := find(first.results, "data: erasure subjects (user ids of the big tenant)"); r == nil || r.Value != 23 {
		t.Fatalf("first run: %+v, want 23 subjects", first.results)
	}

	cfg.keep = true
	again := &bench{cfg: cfg}
	if err := again.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if find(again.results, "data set: rows (reused with -keep)") == nil || find(again.results, "data set: rows loaded") != nil {
		t.Fatalf("-keep run: %+v, want the data set reused", again.results)
	}

	// Kept credentials that do not open the kept auth database (another -state-dir ran on
	// it): auth starts afresh, with a new tenant, so the data set is loaded again for it.
	if err := os.WriteFile(authKEK(cfg), []byte("bench:"+randomKey()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	third := &bench{cfg: cfg}
	if err := third.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if find(third.results, "data set: rows loaded") == nil {
		t.Fatalf("-keep run with another key: %+v, want the data set loaded for auth's new tenant", third.results)
	}
}

func find(rs []result, name string) *result {
	for i := range rs {
		if rs[i].Name == name {
			return &rs[i]
		}
	}
	return nil
}

// dropDatabases drops what a run on database db created in ClickHouse and PostgreSQL.
func dropDatabases(t *testing.T, db string) {
	ctx := context.Background()
	admin := chtest.Admin(t)
	conn, err := ch.Open(&ch.Options{Addr: []string{chtest.Addr()}, Auth: ch.Auth{Username: admin.Name, Password: admin.Password}})
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	for _, name := range []string{db, db + "_base"} {
		if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
			t.Error(err)
		}
	}
	pgAdmin, err := postgresURL("postgres")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := pgx.Connect(ctx, pgAdmin)
	if err != nil {
		t.Error(err)
		return
	}
	defer pg.Close(ctx)
	for _, name := range []string{db + "_auth", db + "_dsr"} {
		if _, err := pg.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Error(err)
		}
	}
}
