package servicetest

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
)

// service is what every app package builds.
type service interface {
	Run(ctx context.Context) error
	Close()
}

// run runs a until the returned stop is called (it is also called when the test ends; calling
// it again does nothing). Run's error, if any, fails the test; a is closed after Run returns.
func run(tb testing.TB, name string, a service) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("%s stopped: %v", name, err)
		}
		a.Close()
	})
	tb.Cleanup(stop)
	return stop
}

// orDiscard is logger, or one that discards when it is nil.
func orDiscard(logger *slog.Logger) *slog.Logger {
	if logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return logger
}

// Dial returns a connection to the service named server at addr, with the mesh identity
// identity (e.g. "gateway") issued by ca, closed when the test ends.
func Dial(tb testing.TB, addr string, ca *mtls.CA, identity, server string) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(mtlstest.Source(tb, ca, identity).ClientConfig(server))))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// RequireServing fails the test unless the gRPC health service on conn answers SERVING.
func RequireServing(tb testing.TB, conn *grpc.ClientConn) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		tb.Fatalf("health: %v %v", resp, err)
	}
}

// AdminGet returns the body of path on a service's admin listener, failing the test unless it
// answers 200.
func AdminGet(tb testing.TB, adminAddr, path string) string {
	tb.Helper()
	resp, err := http.Get("http://" + adminAddr + path)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("%s: %d %s", path, resp.StatusCode, body)
	}
	return string(body)
}
