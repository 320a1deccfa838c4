package grpcclient_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
)

// replica is one server of a service, counting the calls it answers.
func replica(t *testing.T, ca *mtls.CA) (string, *atomic.Int64) {
	t.Helper()
	var calls atomic.Int64
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(mtlstest.Source(t, ca, "auth").ServerConfig())),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			calls.Add(1)
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), &calls
}

// A dns:/// target (on Kubernetes, a headless Service: one address per pod) spreads calls over
// every address its name resolves to, instead of keeping them all on the first.
func TestDNSTargetSpreadsCallsOverEveryAddress(t *testing.T) {
	ca := mtlstest.NewCA(t)
	addr1, calls1 := replica(t, ca)
	addr2, calls2 := replica(t, ca)
	// The name resolves to both replicas, as a headless Service's name resolves to its pods.
	dns := manual.NewBuilderWithScheme("dns")
	dns.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: addr1}, {Addr: addr2}}})
	conn, err := grpcclient.Dial("dns:///auth.campaignmesh.svc:7101", "auth", mtlstest.Source(t, ca, "gateway"), grpc.WithResolvers(dns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := healthpb.NewHealthClient(conn)
	meshtest.Eventually(t, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		return calls1.Load() > 0 && calls2.Load() > 0
	}, "calls reach both replicas")
}
