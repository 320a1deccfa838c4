// Package gateway is the edge of the mesh: one TLS listener that serves REST (grpc-gateway)
// and gRPC (a transparent proxy) for every service, so curl and grpcurl use the same address.
// It adds what belongs at the edge — request ids, per-client-IP rate limits, body size limits,
// CORS, tracing, the audit records of what it refuses (refusals.go) — and leaves
// authentication and authorization to the services.
package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	"github.com/campaignmesh/campaignmesh/gateway/console"
	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/gen/openapi"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/ratelimit"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// Backend is a mesh service behind the gateway.
type Backend struct {
	// Package is the proto package the service owns, e.g. "campaignmesh.auth.v1".
	Package string
	Conn    *grpc.ClientConn
	// RegisterREST registers the service's grpc-gateway handlers (e.g. authv1.RegisterAuthServiceHandler).
	RegisterREST func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error
}

// Config holds the edge settings.
type Config struct {
	// RateLimit requests per RateWindow per client IP (default 10,000 per 10 s).
	RateLimit  int
	RateWindow time.Duration
	// MaxBodyBytes bounds a REST request body and a gRPC message (default 1 MiB).
	MaxBodyBytes int
	// CORSOrigins lists the origins browsers may call from; "*" allows any. Empty: none.
	CORSOrigins []string
	// TrustedProxies are the proxies in front of the gateway: only from these TCP peers is
	// X-Forwarded-For believed (see clientIP). Empty: the TCP peer is the client.
	TrustedProxies []netip.Prefix
	Logger         *slog.Logger
	// Registry receives the edge's request metrics (nil: not exported).
	Registry prometheus.Registerer
	// ConsoleSessionKey seals the web console's session cookies (see package console); gateway
	// replicas behind one address must share it. Empty: a random key per process.
	ConsoleSessionKey []byte
	// Auditor durably stores the audit records of what the edge refuses (see refusals.go);
	// cmd/gateway always gives one. Nil: refusals are not recorded (tests of other concerns).
	Auditor audit.Sink
}

// Gateway is the edge HTTP handler.
type Gateway struct {
	cfg     Config
	limiter *ratelimit.Keyed
	metrics *edgeMetrics
	rest    *runtime.ServeMux
	grpc    *grpc.Server
	health  *health.Server
	handler http.Handler

	// refusals records what the edge refuses (nil: not recorded).
	refusals *refusals
	// segment serves the Segment HTTP API (nil: no ingest backend).
	segment *segmentAPI
	// contactsImport serves POST /v1/contacts:import (nil: no delivery backend).
	contactsImport *contactsImport
}

// New builds the gateway for backends.
func New(ctx context.Context, cfg Config, backends []Backend) (*Gateway, error) {
	if cfg.RateLimit <= 0 {
		cfg.RateLimit = 10000
	}
	if cfg.RateWindow <= 0 {
		cfg.RateWindow = 10 * time.Second
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	g := &Gateway{cfg: cfg, limiter: ratelimit.New(ratelimit.PerWindow(cfg.RateLimit, cfg.RateWindow)),
		refusals: newRefusals(cfg.Auditor, cfg.RateWindow, cfg.Logger)}

	g.rest = runtime.NewServeMux(append(restMuxOptions(backends, cfg.Logger), runtime.WithMiddlewares(recordRoute), runtime.WithMetadata(func(ctx context.Context, r *http.Request) metadata.MD {
		md := metadata.Pairs("x-request-id", telemetry.RequestID(ctx))
		if ip := clientIPFromContext(ctx); ip != "" {
			md.Set("x-forwarded-for", ip)
		}
		return md
	}))...)
	for _, b := range backends {
		if err := b.RegisterREST(ctx, g.rest, b.Conn); err != nil {
			return nil, fmt.Errorf("register REST handlers of %s: %w", b.Package, err)
		}
	}

	// Reflection answers for the backends' services too: the gateway links their descriptors.
	files, err := publicFiles(backends)
	if err != nil {
		return nil, err
	}
	if g.metrics, err = newEdgeMetrics(cfg.Registry, publicMethods(files, backends)); err != nil {
		return nil, err
	}
	p := &proxy{backends: backends, codec: newPassthroughCodec(), logger: cfg.Logger}
	recoverOpt := grpcRecovery(cfg.Logger)
	g.grpc = grpc.NewServer(
		grpc.UnknownServiceHandler(p.handle),
		grpc.ForceServerCodecV2(p.codec),
		grpc.MaxRecvMsgSize(cfg.MaxBodyBytes),
		grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(recoverOpt), g.unaryObserve, g.unaryRateLimit, g.unarySizeCheck),
		grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(recoverOpt), g.streamObserve, g.streamRateLimit, g.streamSizeCheck),
	)
	g.health = health.NewServer()
	healthpb.RegisterHealthServer(g.grpc, g.health)
	refl := reflection.ServerOptions{Services: meshServices{own: g.grpc, backends: backends, files: files}, DescriptorResolver: files}
	reflectionv1.RegisterServerReflectionServer(g.grpc, reflection.NewServerV1(refl))
	reflectionv1alpha.RegisterServerReflectionServer(g.grpc, reflection.NewServer(refl))

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapi.Document)
	})
	mux.Handle("/", g.limitBody(g.rest))
	if api := consoleAPI(backends); api.Auth != nil { // no auth, no one to sign in
		cons, err := console.New(console.Config{SessionKey: cfg.ConsoleSessionKey, ClientIP: clientIPFromContext,
			RequestID: telemetry.RequestID, Health: backendHealth(backends), Logger: cfg.Logger}, api)
		if err != nil {
			return nil, err
		}
		mux.Handle(console.Prefix, g.limitBody(cons))
	}
	if g.segment, err = newSegmentAPI(cfg, backends, g.refusals); err != nil {
		return nil, err
	}
	g.contactsImport = newContactsImport(backends, g.rest, cfg.Logger, g.refusals)
	registerTracking(mux, backends, cfg.Logger) // tracked links, pixel, unsubscribe, provider webhooks (tracking.go)
	// Stripe's signed webhooks, relayed to billing (stripewebhook.go).
	registerStripeWebhook(mux, backends, cfg.Logger)

	route := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isGRPC(r) {
			g.grpc.ServeHTTP(w, limitFrames(r, cfg.MaxBodyBytes)) // rate and size limited by the gRPC interceptors, so errors are gRPC-shaped
			return
		}
		if !g.allowHTTP(w, r) {
			return
		}
		if sr, ok := matchSegment(r.URL.Path); ok && g.segment != nil {
			g.segment.serve(w, r, sr) // before the mux, which would redirect an unclean path
			return
		}
		if r.URL.Path == contactsImportPath && g.contactsImport != nil {
			g.contactsImport.serve(w, r) // streamed: not under the REST body limit
			return
		}
		mux.ServeHTTP(w, r)
	})
	g.handler = otelhttp.NewHandler(withRequestContext(cfg.TrustedProxies, g.observeREST(g.cors(route))), "gateway",
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path }))
	if g.refusals != nil {
		go g.refusals.run(ctx)
	}
	return g, nil
}

// consoleAPI gives the console a client of each backend the gateway has.
func consoleAPI(backends []Backend) console.API {
	var api console.API
	for _, b := range backends {
		switch b.Package {
		case "campaignmesh.auth.v1":
			api.Auth = authv1.NewAuthServiceClient(b.Conn)
		case ingestPackage:
			api.Ingest = ingestv1.NewIngestServiceClient(b.Conn)
		case "campaignmesh.campaigns.v1":
			api.Campaigns = campaignsv1.NewCampaignServiceClient(b.Conn)
		case "campaignmesh.analytics.v1":
			api.Analytics = analyticsv1.NewAnalyticsServiceClient(b.Conn)
		case "campaignmesh.dsr.v1":
			api.DSR = dsrv1.NewDsrServiceClient(b.Conn)
		case billingPackage:
			api.Billing = billingv1.NewBillingServiceClient(b.Conn)
		}
	}
	return api
}

// backendHealth asks a backend's gRPC health service (over the mesh connection) whether it
// serves; service is the mesh name, e.g. "ingest" for campaignmesh.ingest.v1.
func backendHealth(backends []Backend) func(context.Context, string) bool {
	return func(ctx context.Context, service string) bool {
		for _, b := range backends {
			if b.Package == "campaignmesh."+service+".v1" {
				ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				resp, err := healthpb.NewHealthClient(b.Conn).Check(ctx, &healthpb.HealthCheckRequest{})
				return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
			}
		}
		return false
	}
}

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.handler.ServeHTTP(w, r) }

// SetServing marks the gateway's own gRPC health as serving or not.
func (g *Gateway) SetServing(serving bool) {
	if serving {
		g.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	} else {
		g.health.Shutdown()
	}
}

// Stop ends the gRPC streams in flight and records the refusals still being counted.
func (g *Gateway) Stop() {
	g.grpc.Stop()
	g.refusals.flush(context.Background(), true)
}

type clientIPKey struct{}

func clientIPFromContext(ctx context.Context) string {
	ip, _ := ctx.Value(clientIPKey{}).(string)
	return ip
}

// withRequestContext gives every request its id (the caller's X-Request-Id when it follows the
// mesh's rule, telemetry.ValidRequestID) and its client address, and returns the id in the
// response.
func withRequestContext(proxies []netip.Prefix, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := telemetry.RequestIDOrNew(r.Header.Get("X-Request-Id"))
		w.Header().Set("X-Request-Id", id)
		ctx := context.WithValue(telemetry.WithRequestID(r.Context(), id), clientIPKey{}, clientIP(r, proxies))
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// allowHTTP applies the per-IP rate limit to a REST request, answering 429 with Retry-After.
func (g *Gateway) allowHTTP(w http.ResponseWriter, r *http.Request) bool {
	ok, retry := g.limiter.Allow(clientIPFromContext(r.Context()), 1)
	if ok {
		return true
	}
	g.refusals.note(r.Context(), MethodRateLimited, clientIPFromContext(r.Context()))
	w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(retry)))
	writeJSONError(w, http.StatusTooManyRequests, codes.ResourceExhausted, "rate limit exceeded")
	return false
}

// grpcClientIP is the client address of a gRPC call.
func grpcClientIP(ctx context.Context) string {
	ip := clientIPFromContext(ctx)
	if ip == "" {
		if p, ok := peer.FromContext(ctx); ok {
			ip, _, _ = net.SplitHostPort(p.Addr.String())
		}
	}
	return ip
}

func (g *Gateway) rateLimitGRPC(ctx context.Context) error {
	ip := grpcClientIP(ctx)
	ok, retry := g.limiter.Allow(ip, 1)
	if ok {
		return nil
	}
	g.refusals.note(ctx, MethodRateLimited, ip)
	_ = grpc.SetHeader(ctx, metadata.Pairs("retry-after", strconv.Itoa(retrySeconds(retry))))
	return status.Error(codes.ResourceExhausted, "rate limit exceeded")
}

func (g *Gateway) unaryRateLimit(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := g.rateLimitGRPC(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (g *Gateway) streamRateLimit(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := g.rateLimitGRPC(ss.Context()); err != nil {
		return err
	}
	return handler(srv, ss)
}

func retrySeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

// limitBody reads at most MaxBodyBytes of a REST body, answering 413 beyond it.
func (g *Gateway) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > int64(g.cfg.MaxBodyBytes) {
			g.refusals.note(r.Context(), MethodRequestTooLarge, clientIPFromContext(r.Context()))
			writeJSONError(w, http.StatusRequestEntityTooLarge, codes.ResourceExhausted, "request body too large")
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, int64(g.cfg.MaxBodyBytes)+1))
		if err != nil {
			writeJSONError(w, http.StatusBadRequest, codes.InvalidArgument, "read request body")
			return
		}
		if len(body) > g.cfg.MaxBodyBytes {
			g.refusals.note(r.Context(), MethodRequestTooLarge, clientIPFromContext(r.Context()))
			writeJSONError(w, http.StatusRequestEntityTooLarge, codes.ResourceExhausted, "request body too large")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

// cors answers preflight requests and marks responses for allowed origins.
func (g *Gateway) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || !(slices.Contains(g.cfg.CORSOrigins, origin) || slices.Contains(g.cfg.CORSOrigins, "*")) {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
		h.Set("Access-Control-Expose-Headers", "X-Request-Id, Retry-After")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// writeJSONError answers in the same JSON shape as grpc-gateway's errors.
func writeJSONError(w http.ResponseWriter, httpStatus int, code codes.Code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	_, _ = fmt.Fprintf(w, `{"code":%d,"message":%q,"details":[]}`+"\n", code, msg)
}
