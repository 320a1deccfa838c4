package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
)

func newTestGateway(t *testing.T, cfg Config) *Gateway {
	t.Helper()
	g, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestCORS(t *testing.T) {
	g := newTestGateway(t, Config{CORSOrigins: []string{"https://app.example"}})
	preflight := func(origin string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodOptions, "/v1/users", nil)
		r.Header.Set("Origin", origin)
		r.Header.Set("Access-Control-Request-Method", "POST")
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		return w
	}
	w := preflight("https://app.example")
	if w.Code != http.StatusNoContent || w.Header().Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(w.Header().Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("allowed preflight: %d %v", w.Code, w.Header())
	}
	if w := preflight("https://evil.example"); w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("foreign origin allowed: %v", w.Header())
	}
}

func TestRequestIDAndBodyLimit(t *testing.T) {
	g := newTestGateway(t, Config{MaxBodyBytes: 1024})
	r := httptest.NewRequest(http.MethodGet, "/healthz", nil)
	r.Header.Set("X-Request-Id", "abc-123")
	w := httptest.NewRecorder()
	g.ServeHTTP(w, r)
	if w.Code != 200 || w.Header().Get("X-Request-Id") != "abc-123" {
		t.Fatalf("healthz: %d, request id %q", w.Code, w.Header().Get("X-Request-Id"))
	}
	// A malformed caller id is replaced, not echoed.
	r = httptest.NewRequest(http.MethodGet, "/healthz", nil)
	r.Header.Set("X-Request-Id", "bad id\nwith newline")
	w = httptest.NewRecorder()
	g.ServeHTTP(w, r)
	if id := w.Header().Get("X-Request-Id"); id == "" || strings.Contains(id, " ") {
		t.Fatalf("request id = %q", id)
	}
	// Chunked (no Content-Length) and declared oversized bodies are both refused.
	for _, declared := range []bool{true, false} {
		r = httptest.NewRequest(http.MethodPost, "/v1/auth/login", strings.NewReader(strings.Repeat("x", 2048)))
		if !declared {
			r.ContentLength = -1
		}
		w = httptest.NewRecorder()
		g.ServeHTTP(w, r)
		if w.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("oversized body (declared=%v): %d, want 413", declared, w.Code)
		}
	}
}

func TestRESTRateLimitPerClientIP(t *testing.T) {
	g := newTestGateway(t, Config{RateLimit: 3, RateWindow: 10 * time.Second})
	get := func(ip string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/healthz", nil)
		r.RemoteAddr = ip + ":40000"
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		return w
	}
	for i := range 3 {
		if w := get("10.0.0.1"); w.Code != http.StatusOK {
			t.Fatalf("request %d refused within the burst: %d", i, w.Code)
		}
	}
	w := get("10.0.0.1")
	if retry, _ := strconv.Atoi(w.Header().Get("Retry-After")); w.Code != http.StatusTooManyRequests || retry < 1 || retry > 10 {
		t.Fatalf("4th request: %d Retry-After %q; want 429 with a retry within the window", w.Code, w.Header().Get("Retry-After"))
	}
	if w := get("10.0.0.2"); w.Code != http.StatusOK {
		t.Fatal("another client is limited by the first one's traffic")
	}
}

// Every REST request is counted by route template and status; what matched no route is
// "unmatched", so callers cannot mint label values.
func TestRequestMetricsByRouteAndCode(t *testing.T) {
	reg := prometheus.NewRegistry()
	g, err := New(context.Background(), Config{Registry: reg, RateLimit: 4, RateWindow: 10 * time.Second}, startEchoMesh(t).backends)
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"/healthz", "/v1/campaigns/c1", "/v1/campaigns/c2", "/no/such/path/x1", "/no/such/path/x2"} {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		r.Header.Set("Authorization", "Bearer any")
		g.ServeHTTP(httptest.NewRecorder(), r)
	}
	if n := testutil.CollectAndCount(g.metrics.requests); n != 4 {
		t.Errorf("%d series, want 4 (no series per raw path)", n)
	}
	count := func(protocol, route, code string) float64 {
		return testutil.ToFloat64(g.metrics.requests.WithLabelValues(protocol, route, code))
	}
	for _, tc := range []struct {
		route, code string
		want        float64
	}{
		{"GET /healthz", "200", 1},
		{"GET /v1/campaigns/{id=*}", "200", 2},
		{"unmatched", "404", 1},
		{"unmatched", "429", 1}, // the 5th request went over the limit of 4
	} {
		if got := count("rest", tc.route, tc.code); got != tc.want {
			t.Errorf("rest %s %s = %v, want %v", tc.route, tc.code, got, tc.want)
		}
	}
	c := grpcEdge(t, g)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer any")
	_, _ = c.GetCampaign(ctx, &campaignsv1.GetCampaignRequest{Id: "c1"})
	if got := count("grpc", "/campaignmesh.campaigns.v1.CampaignService/GetCampaign", "OK"); got != 1 {
		t.Errorf("grpc GetCampaign OK = %v, want 1", got)
	}
}

// A panic while handling a request is a 500 (REST) or INTERNAL (gRPC) for that request only.
func TestPanicsAreRecovered(t *testing.T) {
	var logs strings.Builder
	mesh := startEchoMesh(t)
	mesh.backends = append(mesh.backends, Backend{Package: "test.panics", RegisterREST: func(_ context.Context, mux *runtime.ServeMux, _ *grpc.ClientConn) error {
		return mux.HandlePath(http.MethodGet, "/v1/panic", func(http.ResponseWriter, *http.Request, map[string]string) { panic("boom") })
	}})
	g, err := New(context.Background(), Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, mesh.backends)
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	g.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/panic", nil))
	if w.Code != http.StatusInternalServerError || strings.Contains(w.Body.String(), "boom") {
		t.Fatalf("panicking handler: %d %s, want 500 without the panic text", w.Code, w.Body)
	}
	if !strings.Contains(logs.String(), "boom") {
		t.Errorf("the panic was not logged: %s", logs.String())
	}
	if w := restCall(t, g, http.MethodGet, "/healthz", ""); w.Code != http.StatusOK {
		t.Fatalf("after a panic: %d", w.Code)
	}

	rec := recovery.UnaryServerInterceptor(grpcRecovery(slog.New(slog.DiscardHandler)))
	_, err = rec(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x/y"}, func(context.Context, any) (any, error) { panic("boom") })
	if st := status.Convert(err); st.Code() != codes.Internal || strings.Contains(st.Message(), "boom") {
		t.Fatalf("gRPC panic: %v, want INTERNAL without the panic text", err)
	}
}
