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
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/analytics/app"
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
	a := servicetest.StartAnalytics(t, o)
	conn := servicetest.Dial(t, a.Addr(), o.CA, "gateway", "analytics")
	servicetest.RequireServing(t, conn)
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
