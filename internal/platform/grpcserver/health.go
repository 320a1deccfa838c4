package grpcserver

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// maxHealthRecvMsgSize bounds a request on the health-only port: a Check names a service, no
// more.
const maxHealthRecvMsgSize = 4 << 10

// HealthOnly is a plaintext gRPC server that serves grpc.health.v1 and nothing else: the port
// Kubernetes probes call, since a kubelet presents no client certificate to the mesh's mTLS
// port. No other service is registered on it (no reflection, no API), so the plaintext port
// tells a caller one status and nothing more; any other method answers UNIMPLEMENTED. It answers
// with the statuses of the health server it is given, so a probe sees what a mesh client sees.
type HealthOnly struct {
	grpc *grpc.Server
}

// NewHealthOnly returns a health-only server answering with h's statuses.
func NewHealthOnly(h healthpb.HealthServer) *HealthOnly {
	s := grpc.NewServer(grpc.MaxRecvMsgSize(maxHealthRecvMsgSize))
	healthpb.RegisterHealthServer(s, h)
	return &HealthOnly{grpc: s}
}

// Serve serves on lis until ctx is done and drained is closed, then stops: while the process
// drains its calls on shutdown, probes still get an answer (NOT_SERVING) rather than a refused
// connection. A nil drained stops as soon as ctx is done.
func (s *HealthOnly) Serve(ctx context.Context, lis net.Listener, drained <-chan struct{}) error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve grpc health: %w", err)
	case <-ctx.Done():
	}
	if drained != nil {
		select {
		case <-drained:
		case err := <-errc:
			return fmt.Errorf("serve grpc health: %w", err)
		}
	}
	// Stop, not GracefulStop: a probe's Watch never ends by itself.
	s.grpc.Stop()
	return nil
}
