package grpcserver

import (
	"context"
	"log/slog"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// RequestIDHeader carries the request id between processes and back to the caller.
const RequestIDHeader = telemetry.RequestIDHeader

// requestID takes the caller's request id when it is well-formed (the gateway sets one), or
// makes one, and sends it back in the response header.
func requestID(ctx context.Context) context.Context {
	id := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(RequestIDHeader); len(v) == 1 && telemetry.ValidRequestID(v[0]) {
			id = v[0]
		}
	}
	if id == "" {
		id = telemetry.NewRequestID()
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs(RequestIDHeader, id))
	return telemetry.WithClientAddress(telemetry.WithRequestID(ctx, id), clientAddress(ctx))
}

// clientAddress is the end client's address: what the gateway says it is (x-forwarded-for,
// trusted only from the gateway's mesh identity), else the peer's own address.
func clientAddress(ctx context.Context) string {
	if svc, err := mtls.PeerService(ctx); err == nil && svc == "gateway" {
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			if v := md.Get("x-forwarded-for"); len(v) == 1 && net.ParseIP(v[0]) != nil {
				return v[0]
			}
		}
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
			return host
		}
	}
	return ""
}

func unaryRequestID(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return handler(requestID(ctx), req)
}

func streamRequestID(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &wrappedStream{ServerStream: ss, ctx: requestID(ss.Context())})
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

type errMapper struct{ logger *slog.Logger }

func errorMapper(l *slog.Logger) errMapper { return errMapper{logger: l} }

// mapErr turns any handler error into the status the caller sees; internal errors are
// answered with a generic INTERNAL whose ref is logged here with the full error.
func (m errMapper) mapErr(ctx context.Context, method string, err error) error {
	if err == nil {
		return nil
	}
	st, ref := apperr.ToStatus(err)
	if ref != "" {
		m.logger.ErrorContext(ctx, "internal error", "method", method, "ref", ref, "err", err.Error())
	}
	return st.Err()
}

func (m errMapper) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	return resp, m.mapErr(ctx, info.FullMethod, err)
}

func (m errMapper) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return m.mapErr(ss.Context(), info.FullMethod, handler(srv, ss))
}

var errVerifierDown = apperr.New(apperr.Unavailable, "AUTH_UNAVAILABLE", "credential cannot be verified right now; retry")

var errBadCredential = apperr.New(apperr.Unauthenticated, "INVALID_CREDENTIAL", "invalid or expired credential")

// bearerAuth puts the principal of an `authorization: Bearer …` credential in the context.
// No credential means no principal (public RPCs allow that; the access layer decides). A
// credential that does not verify is refused here with one generic message; the reason is
// logged, never returned.
func bearerAuth(v Verifier, classify func(error) error, logger *slog.Logger) func(ctx context.Context) (context.Context, error) {
	return func(ctx context.Context) (context.Context, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		vals := md.Get("authorization")
		if len(vals) == 0 {
			return ctx, nil
		}
		scheme, cred, ok := strings.Cut(vals[0], " ")
		if len(vals) > 1 || !ok || !strings.EqualFold(scheme, "bearer") || cred == "" || v == nil {
			return nil, errBadCredential
		}
		p, err := v.Verify(ctx, strings.TrimSpace(cred))
		if err != nil && classify != nil {
			err = classify(err)
		}
		if apperr.HasCode(err, apperr.Unavailable) { // a local check whose store is down
			logger.WarnContext(ctx, "credential not verifiable now", "reason", err.Error())
			return nil, err
		}
		if st, ok := status.FromError(err); ok && err != nil && st.Code() == codes.Unavailable {
			logger.WarnContext(ctx, "credential not verifiable now", "reason", err.Error())
			return nil, errVerifierDown
		}
		if err != nil {
			logger.InfoContext(ctx, "credential refused", "reason", err.Error())
			return nil, errBadCredential
		}
		return authn.WithPrincipal(ctx, p), nil
	}
}

// classifier turns the errors of the service's dependencies into the domain errors they mean
// (WithErrorClassifier), logging the cause of each it turned UNAVAILABLE at warn: the call's own
// log line only carries what the caller sees.
type classifier struct {
	classify func(error) error
	logger   *slog.Logger
}

func (c classifier) apply(ctx context.Context, method string, err error) error {
	if err == nil {
		return nil
	}
	out := c.classify(err)
	if apperr.HasCode(out, apperr.Unavailable) && !apperr.HasCode(err, apperr.Unavailable) {
		c.logger.WarnContext(ctx, "dependency unavailable", "method", method, "err", err.Error())
	}
	return out
}

func (c classifier) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	return resp, c.apply(ctx, info.FullMethod, err)
}

func (c classifier) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return c.apply(ss.Context(), info.FullMethod, handler(srv, ss))
}

func unaryValidator(v Validator) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := validate(v, info.FullMethod, req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

func streamValidator(v Validator) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &validatingStream{ServerStream: ss, method: info.FullMethod, validate: v})
	}
}

type validatingStream struct {
	grpc.ServerStream
	method   string
	validate Validator
}

func (s *validatingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return validate(s.validate, s.method, m)
}

// validate refuses NUL bytes in any string of req, then runs the service's validator.
func validate(v Validator, method string, req any) error {
	if err := refuseNUL(req); err != nil {
		return err
	}
	if v == nil {
		return nil
	}
	return v(method, req)
}
