// Package grpcserver builds the gRPC server every CampaignMesh service runs: mTLS, a fixed
// interceptor chain, health, reflection, metrics, tracing, message size limits, a maximum
// connection age (so clients spread over replicas) and a graceful stop; its health also on a
// plaintext health-only port for Kubernetes probes (ServeHealth). The chain is, outermost first:
//
//	recovery → metrics → request id → logging → error mapping → decoding → authentication (streams:
//	re-checked every second for revocation) → access (authz + audit) → validation → dependency
//	error classification (WithErrorClassifier) → the service's innermost stages (WithInnermost)
//
// so that every error, including a denial, is logged once with its final code, and handlers
// only ever see authenticated, authorized and validated requests. Malformed input is refused
// as INVALID_ARGUMENT naming the field, never as a transport error: a request that does not
// decode (invalid UTF-8, nesting past the limit) at the decoding stage, and a string holding a
// NUL byte anywhere in the request at the validation stage, before the service's own validator.
package grpcserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/campaignmesh/campaignmesh/internal/platform/access"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// Defaults of the server options.
const (
	DefaultMaxRecvMsgSize = 4 << 20
	DefaultGracePeriod    = 10 * time.Second
	// DefaultMaxConnectionAge is how long a client connection lives before the server asks the
	// client (GOAWAY) to open a new one for its next calls. Behind a Kubernetes Service a gRPC
	// client otherwise keeps its first pod for as long as the process lives: a new replica
	// (scale-out, rollout) would get no traffic from existing clients.
	DefaultMaxConnectionAge = 5 * time.Minute
	// DefaultMaxConnectionAgeGrace is how long calls in flight on a connection past its age may
	// run before they are cut: 0, no limit. The GOAWAY already moves new calls to a new
	// connection; the long streams (TailEvents, WatchCampaignMetrics, StreamEvents,
	// DownloadExport) then end on their own terms instead of failing UNAVAILABLE mid-stream.
	DefaultMaxConnectionAgeGrace = time.Duration(0)
)

// Verifier checks a bearer credential and returns its principal.
type Verifier interface {
	Verify(ctx context.Context, credential string) (*authn.Principal, error)
}

// Validator checks a decoded request of method; it returns apperr field violations.
type Validator func(method string, req any) error

type options struct {
	logger         *slog.Logger
	tls            *tls.Config
	verifier       Verifier
	validator      Validator
	auditor        audit.Sink
	registry       prometheus.Registerer
	maxRecvMsgSize int
	grace          time.Duration
	maxAge         time.Duration
	maxAgeGrace    time.Duration
	service        string
	innermost      []grpc.UnaryServerInterceptor
	classify       func(error) error
	quiet          map[string]bool
}

// Option configures a Server.
type Option func(*options)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithTLS sets the server's TLS config (mtls.Source.ServerConfig). Without it the server is
// plaintext, which only in-process tests use.
func WithTLS(c *tls.Config) Option { return func(o *options) { o.tls = c } }

// WithVerifier sets how bearer credentials are verified. Without one, every bearer credential
// is rejected.
func WithVerifier(v Verifier) Option { return func(o *options) { o.verifier = v } }

// WithValidator sets the request validator.
func WithValidator(v Validator) Option { return func(o *options) { o.validator = v } }

// WithAuditor sets the durable sink of the audit records of audited and denied calls. It is
// required: Serve refuses to start without one.
func WithAuditor(a audit.Sink) Option { return func(o *options) { o.auditor = a } }

// WithService names the service in audit records (e.g. "auth").
func WithService(name string) Option { return func(o *options) { o.service = name } }

// WithInnermost adds unary interceptors after validation, right before the handler: stages that
// only ever see authorized, valid requests (e.g. idempotency.Store.UnaryInterceptor).
func WithInnermost(i ...grpc.UnaryServerInterceptor) Option {
	return func(o *options) { o.innermost = append(o.innermost, i...) }
}

// WithErrorClassifier sets how errors of the service's own dependencies are recognised, e.g.
// pgdb.Classify: a database that cannot be reached answers UNAVAILABLE with retry info (logged
// at warn with its cause) instead of INTERNAL. It sees every error of the handler and of the
// stages after validation (WithInnermost), and of a local credential check, before the access
// layer records the outcome.
func WithErrorClassifier(c func(error) error) Option { return func(o *options) { o.classify = c } }

// WithQuietCalls names the hot-path methods (full names, "/pkg.Service/Method") whose successful
// calls log at debug rather than info: one line per call at the event rate is hundreds of MB an
// hour. Their failures and denials keep their level; their metrics count every call.
func WithQuietCalls(methods ...string) Option {
	return func(o *options) {
		if o.quiet == nil {
			o.quiet = map[string]bool{}
		}
		for _, m := range methods {
			o.quiet[m] = true
		}
	}
}

// WithMetrics registers the server's RPC metrics with reg.
func WithMetrics(reg prometheus.Registerer) Option { return func(o *options) { o.registry = reg } }

// WithMaxRecvMsgSize bounds the size of a received message (default 4 MiB).
func WithMaxRecvMsgSize(n int) Option { return func(o *options) { o.maxRecvMsgSize = n } }

// WithGracePeriod bounds how long a stop waits for calls in flight (default 10 s).
func WithGracePeriod(d time.Duration) Option { return func(o *options) { o.grace = d } }

// WithMaxConnectionAge sets how long a client connection lives before the server sends GOAWAY
// so the client reconnects (and re-resolves) for its next calls, and how long calls in flight
// may then run before the connection is cut; 0 means no limit, for either (defaults
// DefaultMaxConnectionAge, DefaultMaxConnectionAgeGrace).
func WithMaxConnectionAge(age, grace time.Duration) Option {
	return func(o *options) { o.maxAge, o.maxAgeGrace = age, grace }
}

// Server is a gRPC server with the platform's interceptor chain.
type Server struct {
	grpc     *grpc.Server
	health   *health.Server
	enforcer *access.Enforcer
	metrics  *grpcprom.ServerMetrics
	logger   *slog.Logger
	grace    time.Duration
	// stopped is closed when Serve returns: the health-only port (ServeHealth) stops then.
	stopped chan struct{}
	// noSink: built without WithAuditor, so Serve refuses to start.
	noSink bool
}

// New builds a server. Register services on Server.GRPC() before calling Serve.
func New(opts ...Option) *Server {
	o := options{logger: slog.Default(), maxRecvMsgSize: DefaultMaxRecvMsgSize, grace: DefaultGracePeriod,
		maxAge: DefaultMaxConnectionAge, maxAgeGrace: DefaultMaxConnectionAgeGrace}
	for _, opt := range opts {
		opt(&o)
	}
	s := &Server{logger: o.logger, grace: o.grace, stopped: make(chan struct{}), enforcer: access.NewEnforcer(o.service, nil, o.auditor, o.logger), noSink: o.auditor == nil}

	recoveryOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		st, ref := apperr.Masked()
		o.logger.ErrorContext(ctx, "panic in handler", "ref", ref, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return st.Err()
	})
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall)}
	level := quietCalls(o.quiet)
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		o.logger.Log(ctx, slog.Level(level(lvl, fields)), msg, fields...)
	})
	authFunc := bearerAuth(o.verifier, o.classify, o.logger)
	codec := newDecodeCodec()

	unary := []grpc.UnaryServerInterceptor{recovery.UnaryServerInterceptor(recoveryOpt)}
	stream := []grpc.StreamServerInterceptor{recovery.StreamServerInterceptor(recoveryOpt)}
	if o.registry != nil {
		s.metrics = grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
		o.registry.MustRegister(s.metrics)
		// The tracing stats handler has started the call's span by now: latency buckets link to it.
		exemplar := grpcprom.WithExemplarFromContext(telemetry.TraceExemplar)
		unary = append(unary, s.metrics.UnaryServerInterceptor(exemplar))
		stream = append(stream, s.metrics.StreamServerInterceptor(exemplar))
	}
	unary = append(unary,
		unaryRequestID,
		logging.UnaryServerInterceptor(logger, logOpts...),
		errorMapper(o.logger).unary,
		codec.unary,
		auth.UnaryServerInterceptor(authFunc),
		s.enforcer.UnaryInterceptor(),
		unaryValidator(o.validator),
	)
	if o.classify != nil {
		unary = append(unary, classifier{o.classify, o.logger}.unary)
	}
	unary = append(unary, o.innermost...)
	stream = append(stream,
		streamRequestID,
		logging.StreamServerInterceptor(logger, logOpts...),
		errorMapper(o.logger).stream,
		codec.stream,
		auth.StreamServerInterceptor(authFunc),
		streamReverify(o.verifier, ReverifyInterval),
		s.enforcer.StreamInterceptor(),
		streamValidator(o.validator),
	)
	if o.classify != nil {
		stream = append(stream, classifier{o.classify, o.logger}.stream)
	}

	serverOpts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.StatsHandler(otelgrpc.NewServerHandler()),
		grpc.ForceServerCodecV2(codec),
		grpc.MaxRecvMsgSize(o.maxRecvMsgSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Zero is infinity for both in grpc-go, as it is for the options.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: o.maxAge, MaxConnectionAgeGrace: o.maxAgeGrace}),
	}
	if o.tls != nil {
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(o.tls)))
	}
	s.grpc = grpc.NewServer(serverOpts...)
	s.health = health.NewServer()
	// Not ready until Serve: the health-only port may be asked before the server serves.
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	return s
}

// GRPC returns the underlying server to register services on.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Rules returns the access rules of every registered method and the methods that lack one.
func (s *Server) Rules() (access.Rules, []string) { return access.RulesFor(s.grpc.GetServiceInfo()) }

// Serve serves on lis until ctx is done, then stops gracefully: health turns NOT_SERVING, calls
// in flight get the grace period, and the rest are cut. It refuses to start without a durable
// audit sink (WithAuditor: a denied credential must become a record, not a log line) and when
// any registered RPC lacks an access rule. With WithMetrics, the request series of every
// registered method are exported from the start.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	defer close(s.stopped)
	if s.noSink {
		return errors.New("refusing to serve: no durable audit sink (grpcserver.WithAuditor)")
	}
	rules, missing := s.Rules()
	if len(missing) > 0 {
		return fmt.Errorf("refusing to serve: RPCs without an access rule: %v", missing)
	}
	s.enforcer.SetRules(rules)
	if s.metrics != nil {
		// Every registered method's series exist from the start, at zero: a process nobody has
		// called yet still exports its request metrics (dashboards and rate() need the zeros).
		s.metrics.InitializeMetrics(s.grpc)
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)

	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(lis) }()
	s.logger.Info("grpc listening", "addr", lis.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve grpc: %w", err)
	case <-ctx.Done():
	}
	s.health.Shutdown()
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(s.grace):
		s.logger.Warn("grace period over; cutting remaining calls", "grace", s.grace.String())
		s.grpc.Stop()
	}
	return nil
}

// ServeHealth serves the server's health, and nothing else, in plaintext on lis (HealthOnly):
// NOT_SERVING until Serve is ready, SERVING while it serves, NOT_SERVING again from the start
// of its graceful stop until Serve returns; then it stops too. Run it beside Serve, until the
// same ctx is done.
func (s *Server) ServeHealth(ctx context.Context, lis net.Listener) error {
	s.logger.Info("grpc health listening", "addr", lis.Addr().String())
	return NewHealthOnly(s.health).Serve(ctx, lis, s.stopped)
}
