package servicetest

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
)

// RequireHealthOnly fails the test unless addr is a health-only port, as a kubelet's probe
// sees it: a plaintext health Check answers SERVING (within a few seconds of the start), and
// nothing else is served there (reflection answers UNIMPLEMENTED).
func RequireHealthOnly(tb testing.TB, addr string) {
	tb.Helper()
	if addr == "" {
		tb.Fatal("no health-only port")
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	meshtest.Eventually(tb, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, _ := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}, "plaintext health on %s answers SERVING", addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err == nil {
		_ = refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		_, err = refl.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		tb.Errorf("reflection on the health-only port %s: %v, want Unimplemented", addr, err)
	}
}
