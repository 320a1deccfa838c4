package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// What the edge observes of every request: one counter and one latency histogram labelled by
// protocol ("rest" or "grpc"), route and code. A REST route is the matched mapping's method and
// path template ("GET /v1/campaigns/{id}"), a gRPC route the full method name; anything that
// matched no route is "unmatched", so a caller cannot mint label values. The code is the HTTP
// status for REST and the gRPC code name for gRPC.
type edgeMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	methods  map[string]bool // public gRPC methods of the backends
}

func newEdgeMetrics(reg prometheus.Registerer, methods map[string]bool) (*edgeMetrics, error) {
	m := &edgeMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_requests_total", Help: "Requests answered by the gateway, by protocol, route and code.",
		}, []string{"protocol", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gateway_request_duration_seconds", Help: "Time to answer a request, by protocol and route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"protocol", "route"}),
		methods: methods,
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register gateway metrics: %w", err)
		}
	}
	return m, nil
}

func (m *edgeMetrics) observe(protocol, route, code string, since time.Time) {
	m.requests.WithLabelValues(protocol, route, code).Inc()
	m.duration.WithLabelValues(protocol, route).Observe(time.Since(since).Seconds())
}

// routeKey holds the REST route of a request, filled in by the REST mux once it has matched.
type routeKey struct{}

type routeSlot struct{ route string }

// recordRoute is a grpc-gateway middleware: the mux has matched the request's mapping.
func recordRoute(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		if slot, ok := r.Context().Value(routeKey{}).(*routeSlot); ok {
			if pat, ok := runtime.HTTPPattern(r.Context()); ok {
				slot.route = r.Method + " " + pat.String()
			}
		}
		next(w, r, params)
	}
}

// fixedRoutes are the gateway's own REST paths.
var fixedRoutes = map[string]bool{"GET /healthz": true, "GET /openapi.json": true}

// statusWriter remembers the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func isGRPC(r *http.Request) bool {
	return r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// observeREST counts and times REST requests and recovers a panic in their handling as a 500
// (gRPC requests are observed and recovered by the gRPC server's interceptors).
func (g *Gateway) observeREST(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isGRPC(r) {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		slot := &routeSlot{}
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler { //nolint:errorlint // a sentinel panic value, compared as net/http does
					panic(p)
				}
				g.cfg.Logger.ErrorContext(r.Context(), "panic in request", "panic", fmt.Sprint(p), "stack", string(debug.Stack()),
					"method", r.Method, "path", r.URL.Path)
				if sw.code == 0 {
					writeJSONError(sw, http.StatusInternalServerError, codes.Internal, "internal error")
				}
			}
			route := slot.route
			if route == "" {
				if key := r.Method + " " + r.URL.Path; fixedRoutes[key] {
					route = key
				} else {
					route = "unmatched"
				}
			}
			code := sw.code
			if code == 0 {
				code = http.StatusOK
			}
			g.metrics.observe("rest", route, strconv.Itoa(code), start)
		}()
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), routeKey{}, slot)))
	})
}

// grpcRoute is the metrics route of a gRPC method.
func (m *edgeMetrics) grpcRoute(method string) string {
	if m.methods[method] {
		return method
	}
	return "unmatched"
}

func (g *Gateway) unaryObserve(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	g.metrics.observe("grpc", g.metrics.grpcRoute(info.FullMethod), status.Code(err).String(), start)
	return resp, err
}

func (g *Gateway) streamObserve(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	err := handler(srv, ss)
	g.metrics.observe("grpc", g.metrics.grpcRoute(info.FullMethod), status.Code(err).String(), start)
	return err
}

// grpcRecovery turns a panic in the gateway's gRPC handling into INTERNAL, logged with its stack.
func grpcRecovery(logger *slog.Logger) recovery.Option {
	return recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		logger.ErrorContext(ctx, "panic in grpc handling", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
}
