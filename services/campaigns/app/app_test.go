package app_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/campaigns/app"
)

// A service built on port 0 tells where it listens: gRPC health and the API over mTLS on Addr,
// /healthz and /metrics on AdminAddr — with the server's request series and the scheduler's
// own series from the start, before any transition or budget check.
func TestServesWhereItListens(t *testing.T) {
	t.Parallel()
	issuer := meshtest.NewIssuer(t)
	a := servicetest.StartCampaigns(t, servicetest.CampaignsOptions{Verifier: issuer.Verifier(),
		Config: func(c *app.Config) { c.HealthListen = "127.0.0.1:0" }})
	conn := servicetest.Dial(t, a.Addr(), a.CA, "gateway", app.ServiceName)
	servicetest.RequireServing(t, conn)
	servicetest.RequireHealthOnly(t, a.HealthAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	get := func(path string) string { return servicetest.AdminGet(t, a.AdminAddr(), path) }
	if body := get("/healthz"); body != "ok\n" {
		t.Errorf("/healthz: %q", body)
	}
	metrics := get("/metrics")
	for _, series := range []string{
		"grpc_server_handled_total",
		`campaigns_scheduler_transitions_total{action="start",from="scheduled",to="active"} 0`,
		"campaigns_scheduler_lateness_seconds_count 0",
		"campaigns_scheduler_due_campaigns 0",
		`campaigns_budget_checks_total{result="unchanged"} 0`,
		`campaigns_budget_exhaustions_total{budget="daily"} 0`,
	} {
		if !strings.Contains(metrics, series) {
			t.Errorf("/metrics has no %s", series)
		}
	}

	// The API answers a credential of the configured verifier.
	call := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+issuer.Token(t, "t1", rbac.Viewer, "u-viewer"))
	if _, err := campaignsv1.NewCampaignServiceClient(conn).ListCampaigns(call, &campaignsv1.ListCampaignsRequest{}); err != nil {
		t.Fatalf("list campaigns: %v", err)
	}
	if metrics := get("/metrics"); !strings.Contains(metrics, `grpc_method="ListCampaigns"`) {
		t.Errorf("/metrics counts no ListCampaigns call")
	}
}

// New fails (releasing what it opened) when it cannot listen; Run returns why it stopped
// rather than nil.
func TestNewAndRunReportFailures(t *testing.T) {
	t.Parallel()
	issuer := meshtest.NewIssuer(t)
	running := servicetest.StartCampaigns(t, servicetest.CampaignsOptions{Verifier: issuer.Verifier()})
	logger := slog.New(slog.DiscardHandler)
	o := servicetest.CampaignsOptions{CA: running.CA, Verifier: issuer.Verifier()}
	cfg := servicetest.CampaignsConfig(t, &o)
	cfg.Listen = running.Addr()
	if a, err := app.New(context.Background(), cfg, logger); err == nil || !strings.Contains(err.Error(), "listen "+running.Addr()) {
		if a != nil {
			a.Close()
		}
		t.Errorf("New on a port in use: %v", err)
	}

	a, err := app.New(context.Background(), servicetest.CampaignsConfig(t, &o), logger)
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
