package app_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/analytics/app"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

func options(t *testing.T) servicetest.AnalyticsOptions {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return servicetest.AnalyticsOptions{CA: mtlstest.NewCA(t), Verifier: authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": pub})}}
}

// A service built on port 0 tells where it listens: gRPC health over mTLS on Addr, /healthz
// and /metrics (with the server's and the writer's series) on AdminAddr.
func TestServesWhereItListens(t *testing.T) {
	o := options(t)
	o.Config = func(c *app.Config) { c.HealthListen = "127.0.0.1:0" }
	a := servicetest.StartAnalytics(t, o)
	conn := servicetest.Dial(t, a.Addr(), o.CA, "gateway", "analytics")
	servicetest.RequireServing(t, conn)
	servicetest.RequireHealthOnly(t, a.HealthAddr())
	get := func(path string) string { return servicetest.AdminGet(t, a.AdminAddr(), path) }
	if body := get("/healthz"); body != "ok\n" {
		t.Errorf("/healthz: %q", body)
	}
	metrics := get("/metrics")
	for _, series := range []string{"grpc_server_handled_total", "writer_inserted_rows_total"} {
		if !strings.Contains(metrics, series) {
			t.Errorf("/metrics has no %s", series)
		}
	}
}

// New fails (releasing what it opened) when it cannot listen; Run returns why it stopped
// rather than nil.
func TestNewAndRunReportFailures(t *testing.T) {
	o := options(t)
	running := servicetest.StartAnalytics(t, o)
	cfg := servicetest.AnalyticsConfig(t, o)
	cfg.Listen = running.Addr()
	logger := slog.New(slog.DiscardHandler)
	if a, err := app.New(context.Background(), cfg, logger); err == nil || !strings.Contains(err.Error(), "listen "+running.Addr()) {
		if a != nil {
			a.Close()
		}
		t.Errorf("New on a port in use: %v", err)
	}

	a, err := app.New(context.Background(), servicetest.AnalyticsConfig(t, o), logger)
	if err != nil {
		t.Fatal(err)
	}
	a.Close() // the listeners go away under Run
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Run(ctx); err == nil || ctx.Err() != nil {
		t.Errorf("Run without its listeners: %v (context: %v), want their error at once", err, ctx.Err())
	}
}

// -roles writer runs the writer alone: no gRPC listener (Addr is empty), /healthz and the
// writer's series on the admin listener. -roles api runs the query API without the writer, on
// the schema writer 0 migrated.
func TestRoles(t *testing.T) {
	o := options(t)
	o.Database = chtest.NewDatabase(t) // the API alone waits for writer 0's schema
	o.Config = func(c *app.Config) { c.Roles, c.HealthListen = app.Roles{Writer: true}, "127.0.0.1:0" }
	w := servicetest.StartAnalytics(t, o)
	if w.Addr() != "" {
		t.Errorf("a writer alone listens for gRPC on %s", w.Addr())
	}
	servicetest.RequireHealthOnly(t, w.HealthAddr()) // probes of the writer alone
	if body := servicetest.AdminGet(t, w.AdminAddr(), "/healthz"); body != "ok\n" {
		t.Errorf("writer's /healthz: %q", body)
	}
	if m := servicetest.AdminGet(t, w.AdminAddr(), "/metrics"); !strings.Contains(m, "writer_inserted_rows_total") || strings.Contains(m, "grpc_server_handled_total") {
		t.Errorf("writer's /metrics: want the writer's series and no gRPC server's:\n%s", m)
	}

	o.Config = func(c *app.Config) { c.Roles = app.Roles{API: true} }
	api := servicetest.StartAnalytics(t, o)
	servicetest.RequireServing(t, servicetest.Dial(t, api.Addr(), o.CA, "gateway", "analytics"))
	if m := servicetest.AdminGet(t, api.AdminAddr(), "/metrics"); strings.Contains(m, "writer_inserted_rows_total") {
		t.Error("the query API alone runs a writer")
	}
}

// New refuses a configuration that the flags' checks refuse (here: a writer index not below
// the count), before it connects to anything.
func TestNewChecksShardsAndWriters(t *testing.T) {
	cfg := app.DefaultConfig()
	cfg.WriterIndex, cfg.WriterCount = 2, 2
	if a, err := app.New(context.Background(), cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "-writer-index") {
		if a != nil {
			a.Close()
		}
		t.Errorf("New with writer 2 of 2: %v, want it refused", err)
	}
}

// With two shards the writer user connects to both and brings each one's schema up to date.
func TestOpensEveryShard(t *testing.T) {
	c := chtest.StartCluster(t, "cm_analytics", 2)
	o := options(t)
	o.Database = c.NewDatabase(t)
	o.Config = func(cfg *app.Config) {
		cfg.ClickHouseAddr, cfg.ClickHouseShards = c.Addrs[0], c.Addrs
		cfg.WriterUser, cfg.ReaderUser = clickhouse.User(c.Writer), clickhouse.User(c.Reader)
	}
	servicetest.StartAnalytics(t, o)
	for i := range c.Addrs {
		var n uint64
		if err := c.Conn(t, i, o.Database, c.Admin).QueryRow(context.Background(),
			"SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("shard %d has no events table", i+1)
		}
	}
}
