package e2e

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/campaignmesh/campaignmesh/internal/servicetest"
)

// The gateway binary with -health-listen (CM_GATEWAY_HEALTH_LISTEN) serves its health, and
// nothing else, in plaintext for Kubernetes probes, until it stops.
func TestGatewayHealthOnlyPort(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	m := startMesh(t, "CM_GATEWAY_HEALTH_LISTEN="+port)
	servicetest.RequireHealthOnly(t, port)
	m.procs["gateway"].stop()
	conn, err := grpc.NewClient(port, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Error("the health port still answers after the gateway stopped")
	}
}
