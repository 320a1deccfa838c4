// Package grpcclient dials other mesh services: mTLS with the expected SPIFFE ID, OpenTelemetry
// propagation, request-id propagation, keepalives and retries of UNAVAILABLE.
package grpcclient

import (
	"context"
	"fmt"
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
const retryPolicy = `{
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

// Dial returns a client connection to the mesh service named service at target, authenticating
// with src's certificate and accepting only a server whose SPIFFE ID names service.
func Dial(target, service string, src *mtls.Source, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(src.ClientConfig(service))),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler()),
		grpc.WithDefaultServiceConfig(retryPolicy),
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
