package grpcserver_test

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	meshtestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/meshtest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
)

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// server is a platform server over mTLS with the probe service, built but not serving.
func server(t *testing.T, opts ...grpcserver.Option) (*grpcserver.Server, *mtls.CA) {
	t.Helper()
	ca := mtlstest.NewCA(t)
	srv := grpcserver.New(append([]grpcserver.Option{
		grpcserver.WithLogger(slog.New(slog.DiscardHandler)),
		grpcserver.WithTLS(mtlstest.Source(t, ca, "auth").ServerConfig()),
		grpcserver.WithAuditor(&auditLog{}),
		grpcserver.WithGracePeriod(time.Minute),
	}, opts...)...)
	meshtestv1.RegisterProbeServiceServer(srv.GRPC(), probe{taken: &auditLog{}})
	return srv, ca
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	return lis
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// check is the status a health Check answers, or the code of its error.
func check(conn *grpc.ClientConn) (healthpb.HealthCheckResponse_ServingStatus, codes.Code) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return resp.GetStatus(), status.Code(err)
}

// The health-only port answers health checks in plaintext (a kubelet has no client
// certificate) and nothing else, with the main server's status: not serving before it is
// ready, serving while it serves, not serving while it drains on shutdown; then it closes. The
// main port still refuses a plaintext client.
func TestHealthOnlyPortFollowsTheServer(t *testing.T) {
	srv, ca := server(t)
	lis, healthLis := listen(t), listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	healthDone := make(chan error, 1)
	go func() { healthDone <- srv.ServeHealth(ctx, healthLis) }()
	probe := dial(t, healthLis.Addr().String(), insecure.NewCredentials())

	meshtest.Eventually(t, 10*time.Second, func() bool {
		st, code := check(probe)
		return code == codes.OK && st == healthpb.HealthCheckResponse_NOT_SERVING
	}, "the health port answers NOT_SERVING before the server serves")

	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ctx, lis) }()
	meshtest.Eventually(t, 10*time.Second, func() bool {
		st, code := check(probe)
		return code == codes.OK && st == healthpb.HealthCheckResponse_SERVING
	}, "the health port answers SERVING once the server serves")

	// Nothing but health on the plaintext port: neither the APIs nor reflection.
	if _, err := meshtestv1.NewProbeServiceClient(probe).Public(context.Background(), &meshtestv1.ProbeRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("an API on the health port: %v, want Unimplemented", err)
	}
	refl, err := reflectionpb.NewServerReflectionClient(probe).ServerReflectionInfo(context.Background())
	if err == nil {
		_ = refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		_, err = refl.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("reflection on the health port: %v, want Unimplemented", err)
	}
	// The main port stays mTLS only.
	if _, code := check(dial(t, lis.Addr().String(), insecure.NewCredentials())); code == codes.OK {
		t.Error("the main port answered a plaintext client")
	}

	// A mesh client's stream keeps the server draining after shutdown begins.
	mesh := dial(t, lis.Addr().String(), credentials.NewTLS(mtlstest.Source(t, ca, "gateway").ClientConfig("auth")))
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	watch, err := healthpb.NewHealthClient(mesh).Watch(watchCtx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch = %v, %v", resp, err)
	}
	cancel()
	meshtest.Eventually(t, 10*time.Second, func() bool {
		st, code := check(probe)
		return code == codes.OK && st == healthpb.HealthCheckResponse_NOT_SERVING
	}, "the health port answers NOT_SERVING while the server drains")
	stopWatch()
	for name, done := range map[string]chan error{"Serve": serveDone, "ServeHealth": healthDone} {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s = %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not return after the drain", name)
		}
	}
	if _, code := check(probe); code == codes.OK {
		t.Error("the health port still answers after the server stopped")
	}
}

// A connection past its maximum age is replaced for new calls (the client reconnects, so
// behind a Kubernetes Service it may reach another pod), while a stream already on it keeps
// running: the default grace is unlimited.
func TestConnectionsAgeOutWithoutCuttingStreams(t *testing.T) {
	srv, ca := server(t, grpcserver.WithMaxConnectionAge(200*time.Millisecond, grpcserver.DefaultMaxConnectionAgeGrace))
	lis := &countingListener{Listener: listen(t)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ctx, lis) }()
	mesh := dial(t, lis.Addr().String(), credentials.NewTLS(mtlstest.Source(t, ca, "gateway").ClientConfig("auth")))
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	watch, err := healthpb.NewHealthClient(mesh).Watch(watchCtx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch = %v, %v", resp, err)
	}
	meshtest.Eventually(t, 10*time.Second, func() bool {
		_, code := check(mesh)
		return code == codes.OK && lis.accepted.Load() >= 3
	}, "the client reconnects as its connections age out (accepted %d)", lis.accepted.Load())
	// The first stream outlived its connection's age: it still gets the shutdown's update.
	cancel()
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("the stream opened before the connection aged out: %v, %v; want NOT_SERVING", resp, err)
	}
	stopWatch()
	if err := <-serveDone; err != nil {
		t.Fatal(err)
	}
}

// With a finite grace, a stream still running that long after its connection's age is cut
// (UNAVAILABLE): what -max-connection-age-grace trades against long streams.
func TestConnectionAgeGraceCutsLongStreams(t *testing.T) {
	srv, ca := server(t, grpcserver.WithMaxConnectionAge(200*time.Millisecond, 200*time.Millisecond))
	lis := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() { cancel(); <-serveDone })
	mesh := dial(t, lis.Addr().String(), credentials.NewTLS(mtlstest.Source(t, ca, "gateway").ClientConfig("auth")))
	watchCtx, stopWatch := context.WithTimeout(context.Background(), 30*time.Second)
	defer stopWatch()
	watch, err := healthpb.NewHealthClient(mesh).Watch(watchCtx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch = %v, %v", resp, err)
	}
	if resp, err := watch.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("the stream past age and grace: %v, %v; want Unavailable", resp, err)
	}
}
