package grpcserver_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	meshtestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/meshtest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
)

// A server that nobody has called yet already exports the request series of every method it
// serves, at zero.
func TestRequestMetricsExistBeforeTheFirstCall(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := grpcserver.New(grpcserver.WithLogger(slog.New(slog.DiscardHandler)), grpcserver.WithAuditor(&auditLog{}), grpcserver.WithMetrics(reg))
	meshtestv1.RegisterProbeServiceServer(srv.GRPC(), probe{taken: &auditLog{}})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Health answers once Serve has set the server up (its own series are not looked at here).
	checkCtx, stop := context.WithTimeout(ctx, 10*time.Second) // bounded: a server that refused to serve never answers
	defer stop()
	if _, err := healthpb.NewHealthClient(conn).Check(checkCtx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]map[string]bool{} // metric -> probe methods with a series
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["grpc_service"] != "campaignmesh.meshtest.v1.ProbeService" {
				continue
			}
			if seen[f.GetName()] == nil {
				seen[f.GetName()] = map[string]bool{}
			}
			seen[f.GetName()][labels["grpc_method"]] = true
			if f.GetName() == "grpc_server_started_total" && m.GetCounter().GetValue() != 0 {
				t.Errorf("%s %v = %v before any call", f.GetName(), labels, m.GetCounter().GetValue())
			}
		}
	}
	for _, name := range []string{"grpc_server_started_total", "grpc_server_handled_total", "grpc_server_handling_seconds"} {
		for _, md := range meshtestv1.ProbeService_ServiceDesc.Methods {
			if !seen[name][md.MethodName] {
				t.Errorf("no %s series for %s", name, md.MethodName)
			}
		}
	}
}
