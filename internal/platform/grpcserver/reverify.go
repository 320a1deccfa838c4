package grpcserver

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
)

// ReverifyInterval is how often a long-lived stream's credential is checked again.
const ReverifyInterval = time.Second

// streamReverify ends a stream whose credential is revoked while it runs (a live metrics watch,
// an ingest stream), with the UNAUTHENTICATED a new call would get: revocation reaches open
// streams within ReverifyInterval plus the verifier's own bound. Expiry alone does not end a
// stream that was admitted; revocation does.
func streamReverify(v Verifier, every time.Duration) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		cred := bearerCredential(ss.Context())
		if v == nil || cred == "" || authn.FromContext(ss.Context()) == nil {
			return handler(srv, ss)
		}
		ctx, cancel := context.WithCancelCause(ss.Context())
		defer cancel(nil)
		go func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if _, err := v.Verify(ctx, cred); errors.Is(err, authn.ErrRevoked) {
					cancel(errBadCredential)
					return
				}
			}
		}()
		err := handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
		if errors.Is(context.Cause(ctx), errBadCredential) {
			return errBadCredential
		}
		return err
	}
}

// bearerCredential returns the bearer credential of the call, or "".
func bearerCredential(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return ""
	}
	scheme, cred, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return ""
	}
	return strings.TrimSpace(cred)
}
