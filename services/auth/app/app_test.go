package app_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/auth/app"
)

// A service built on port 0 tells where it listens: gRPC health over mTLS on Addr, /healthz
// and /metrics (with the server's request series) on AdminAddr.
func TestServesWhereItListens(t *testing.T) {
	t.Parallel()
	a := servicetest.StartAuth(t, servicetest.AuthOptions{Config: func(c *app.Config) { c.HealthListen = "127.0.0.1:0" }})
	conn := servicetest.Dial(t, a.Addr(), a.CA, "gateway", "auth")
	servicetest.RequireServing(t, conn)
	servicetest.RequireHealthOnly(t, a.HealthAddr())
	get := func(path string) string { return servicetest.AdminGet(t, a.AdminAddr(), path) }
	if body := get("/healthz"); body != "ok\n" {
		t.Errorf("/healthz: %q", body)
	}
	if metrics := get("/metrics"); !strings.Contains(metrics, "grpc_server_handled_total") {
		t.Errorf("/metrics has no grpc_server_handled_total")
	}
}

// The first start with a bootstrap folder creates the operator and the first tenant's admin
// and hands over their credentials there; a restart on the same database creates nothing more,
// and the signing keys it loads still verify the tokens signed before.
func TestBootstrapAndRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := servicetest.StartAuth(t, servicetest.AuthOptions{Config: func(c *app.Config) { c.BootstrapDir = dir }})
	var op struct{ Email, Password string }
	data, err := os.ReadFile(filepath.Join(dir, "operator.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &op); err != nil {
		t.Fatal(err)
	}
	token := a.Login(t, "", op.Email, op.Password)

	a.Stop()
	again := servicetest.StartAuth(t, a.Options)
	if again.Addr() != a.Addr() {
		t.Errorf("restarted on %s, want %s", again.Addr(), a.Addr())
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
	list, err := again.Client(t, "gateway").ListTenants(ctx, &authv1.ListTenantsRequest{})
	if err != nil {
		t.Fatalf("the operator's token after a restart: %v", err)
	}
	if n := len(list.GetTenants()); n != 1 {
		t.Errorf("%d tenants after a restart, want the bootstrap's one", n)
	}
}

// New fails (releasing what it opened) when it cannot listen or has no key-encryption key;
// Run returns why it stopped rather than nil.
func TestNewAndRunReportFailures(t *testing.T) {
	t.Parallel()
	running := servicetest.StartAuth(t, servicetest.AuthOptions{})
	logger := slog.New(slog.DiscardHandler)
	o := running.Options
	o.Listen = ""
	cfg := servicetest.AuthConfig(t, &o)
	cfg.Listen = running.Addr()
	if a, err := app.New(context.Background(), cfg, logger); err == nil || !strings.Contains(err.Error(), "listen "+running.Addr()) {
		if a != nil {
			a.Close()
		}
		t.Errorf("New on a port in use: %v", err)
	}
	cfg = servicetest.AuthConfig(t, &o)
	cfg.KEKs = nil
	if a, err := app.New(context.Background(), cfg, logger); err == nil || !strings.Contains(err.Error(), "no key-encryption key configured") {
		if a != nil {
			a.Close()
		}
		t.Errorf("New without a key-encryption key: %v", err)
	}

	a, err := app.New(context.Background(), servicetest.AuthConfig(t, &o), logger)
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
