package app_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/delivery/app"
)

// A service built on port 0 tells where it listens: gRPC health and the API over mTLS on Addr,
// /healthz and /metrics on AdminAddr, the probes' health-only port on HealthAddr; the API
// checks credentials with the configured verifier.
func TestServesWhereItListens(t *testing.T) {
	t.Parallel()
	issuer := meshtest.NewIssuer(t)
	a := servicetest.StartDelivery(t, servicetest.DeliveryOptions{Verifier: issuer.Verifier(),
		Config: func(c *app.Config) { c.HealthListen = "127.0.0.1:0" }})
	conn := servicetest.Dial(t, a.Addr(), a.CA, "gateway", app.ServiceName)
	servicetest.RequireServing(t, conn)
	servicetest.RequireHealthOnly(t, a.HealthAddr())
	get := func(path string) string { return servicetest.AdminGet(t, a.AdminAddr(), path) }
	if body := get("/healthz"); body != "ok\n" {
		t.Errorf("/healthz: %q", body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A viewer's token is verified (not UNAUTHENTICATED) and holds no contacts.read.
	call := meshtest.Bearer(ctx, issuer.Token(t, "t1", rbac.Viewer, "u-viewer"))
	if _, err := deliveryv1.NewDeliveryServiceClient(conn).ListContacts(call, &deliveryv1.ListContactsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("list contacts as a viewer: %v, want PERMISSION_DENIED", err)
	}
	if metrics := get("/metrics"); !strings.Contains(metrics, `grpc_method="ListContacts"`) {
		t.Errorf("/metrics counts no ListContacts call")
	}
}

// New fails (releasing what it opened) when it cannot listen; Run returns why it stopped
// rather than nil.
func TestNewAndRunReportFailures(t *testing.T) {
	t.Parallel()
	issuer := meshtest.NewIssuer(t)
	running := servicetest.StartDelivery(t, servicetest.DeliveryOptions{Verifier: issuer.Verifier()})
	logger := slog.New(slog.DiscardHandler)
	o := servicetest.DeliveryOptions{CA: running.CA, Verifier: issuer.Verifier()}
	cfg := servicetest.DeliveryConfig(t, &o)
	cfg.Listen = running.Addr()
	if a, err := app.New(context.Background(), cfg, logger); err == nil || !strings.Contains(err.Error(), "listen "+running.Addr()) {
		if a != nil {
			a.Close()
		}
		t.Errorf("New on a port in use: %v", err)
	}

	a, err := app.New(context.Background(), servicetest.DeliveryConfig(t, &o), logger)
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
