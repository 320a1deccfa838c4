package lifecycle

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
)

// healthStatus is what a plaintext Check on addr answers, or the code of its error.
func healthStatus(t *testing.T, addr string) (healthpb.HealthCheckResponse_ServingStatus, codes.Code) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return resp.GetStatus(), status.Code(err)
}

func waitStatus(t *testing.T, addr string, want healthpb.HealthCheckResponse_ServingStatus, what string) {
	t.Helper()
	meshtest.Eventually(t, 10*time.Second, func() bool {
		st, code := healthStatus(t, addr)
		return code == codes.OK && st == want
	}, "%s: the health port answers %s", what, want)
}

func waitServe(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

// No health port unless asked: the dev defaults open none.
func TestNoHealthPortByDefault(t *testing.T) {
	b := New(slog.New(slog.DiscardHandler))
	defer b.Close()
	if err := b.ListenHealth(""); err != nil || b.HealthAddr() != "" {
		t.Fatalf("ListenHealth(\"\") = %v, HealthAddr %q; want no listener", err, b.HealthAddr())
	}
}

// With a gRPC server, the health port serves the server's health while Serve runs and closes
// when it returns.
func TestHealthPortServesTheServersHealth(t *testing.T) {
	b := New(slog.New(slog.DiscardHandler))
	defer b.Close()
	if err := b.Listen("127.0.0.1:0", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := b.ListenHealth("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ca := mtlstest.NewCA(t)
	srv := grpcserver.New(grpcserver.WithService("test"), grpcserver.WithTLS(mtlstest.Source(t, ca, "test").ServerConfig()),
		grpcserver.WithLogger(slog.New(slog.DiscardHandler)), grpcserver.WithAuditor(discard{}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Serve(ctx, srv) }()
	waitStatus(t, b.HealthAddr(), healthpb.HealthCheckResponse_SERVING, "serving")
	cancel()
	if err := waitServe(t, done); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if _, code := healthStatus(t, b.HealthAddr()); code == codes.OK {
		t.Error("the health port still answers after Serve returned")
	}
}

// Without a gRPC server (the analytics writer alone), the health port answers SERVING while the
// tasks run, NOT_SERVING while they stop, and closes when a task fails.
func TestHealthPortWithoutGRPCServerFollowsTheTasks(t *testing.T) {
	b := New(slog.New(slog.DiscardHandler))
	defer b.Close()
	if err := b.ListenAdmin("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := b.ListenHealth("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	stopping, release := make(chan struct{}), make(chan struct{})
	fail := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- b.Serve(context.Background(), nil,
			func(ctx context.Context) error { // fails on demand
				select {
				case <-fail:
					return boom
				case <-ctx.Done():
					return nil
				}
			},
			func(ctx context.Context) error { // takes its time to stop
				<-ctx.Done()
				close(stopping)
				<-release
				return nil
			})
	}()
	waitStatus(t, b.HealthAddr(), healthpb.HealthCheckResponse_SERVING, "tasks running")
	close(fail)
	<-stopping
	waitStatus(t, b.HealthAddr(), healthpb.HealthCheckResponse_NOT_SERVING, "a task failed, another still stopping")
	close(release)
	if err := waitServe(t, done); !errors.Is(err, boom) {
		t.Fatalf("Serve = %v, want the task's error", err)
	}
	if _, code := healthStatus(t, b.HealthAddr()); code == codes.OK {
		t.Error("the health port still answers after Serve returned")
	}
}
