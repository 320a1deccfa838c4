// Package grpcclient dials other mesh services: mTLS with the expected SPIFFE ID, OpenTelemetry
// propagation, request-id propagation, keepalives and retries of UNAVAILABLE.
//
// A target written dns:///name:port is resolved to every address DNS holds for name (on
// Kubernetes: a headless Service, one address per ready pod) and calls are spread over all of
// them (round_robin). Any other target keeps one connection to the first address (pick_first):
// behind a ClusterIP Service, the servers' maximum connection age moves it between pods.
package grpcclient

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// retryPolicy retries calls that failed with UNAVAILABLE (peer down or restarting) a few times
// with backoff. Creates stay safe to retry because they carry request ids.
const retryPolicy = `{%s
  "methodConfig": [{
    "name": [{}],
    "retryPolicy": {
      "maxAttempts": 4,
      "initialBackoff": "0.1s",
      "maxBackoff": "2s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// roundRobin spreads calls over every resolved address.
const roundRobin = `
  "loadBalancingConfig": [{"round_robin": {}}],`

// serviceConfig is the default service config of target: retries, and round_robin for an
// explicit dns: target.
func serviceConfig(target string) string {
	if strings.HasPrefix(target, "dns:") {
		return fmt.Sprintf(retryPolicy, roundRobin)
	}
	return fmt.Sprintf(retryPolicy, "")
}

// Dial returns a client connection to the mesh service named service at target, authenticating
// with src's certificate and accepting only a server whose SPIFFE ID names service. A dns:///
// target spreads calls over every address of its name (see the package doc).
func Dial(target, service string, src *mtls.Source, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(src.ClientConfig(service))),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler()),
		grpc.WithDefaultServiceConfig(serviceConfig(target)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.WithChainUnaryInterceptor(propagateRequestID),
	}
	conn, err := grpc.NewClient(target, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s at %s: %w", service, target, err)
	}
	return conn, nil
}

// propagateRequestID forwards the request id of the incoming call, so one id follows a request
// through every service it touches — unless the caller already set it (the gateway's REST
// handlers do): a second value would make the server discard both and mint its own.
func propagateRequestID(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	md, _ := metadata.FromOutgoingContext(ctx)
	if id := telemetry.RequestID(ctx); id != "" && len(md.Get(telemetry.RequestIDHeader)) == 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, telemetry.RequestIDHeader, id)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}
