package grpcclient_test

import (
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// The server gets exactly one request id: the incoming call's, whether or not the caller also
// put it in the outgoing metadata itself (as the gateway's REST handlers do). Two values would
// make the server discard the caller's id.
func TestOneRequestIDReachesTheServer(t *testing.T) {
	ca := mtlstest.NewCA(t)
	var mu sync.Mutex
	var seen []string
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(mtlstest.Source(t, ca, "auth").ServerConfig())),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			md, _ := metadata.FromIncomingContext(ctx)
			mu.Lock()
			seen = md.Get(telemetry.RequestIDHeader)
			mu.Unlock()
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpcclient.Dial(lis.Addr().String(), "auth", mtlstest.Source(t, ca, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	ctx := telemetry.WithRequestID(context.Background(), "req-1")
	for name, ctx := range map[string]context.Context{
		"from the incoming call":         ctx,
		"also set by the caller already": metadata.AppendToOutgoingContext(ctx, telemetry.RequestIDHeader, "req-1"),
	} {
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		got := append([]string(nil), seen...)
		mu.Unlock()
		if len(got) != 1 || got[0] != "req-1" {
			t.Errorf("%s: server saw request ids %v, want [req-1]", name, got)
		}
	}
}
