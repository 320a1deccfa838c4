package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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

func TestIPLimiter(t *testing.T) {
	l := newIPLimiter(3, 10*time.Second)
	for i := 0; i < 3; i++ {
		if ok, _ := l.allow("10.0.0.1"); !ok {
			t.Fatalf("request %d refused within the burst", i)
		}
	}
	ok, retry := l.allow("10.0.0.1")
	if ok || retry <= 0 || retry > 10*time.Second {
		t.Fatalf("4th request: ok=%v retry=%v; want refused with a retry within the window", ok, retry)
	}
	if ok, _ := l.allow("10.0.0.2"); !ok {
		t.Fatal("another client is limited by the first one's traffic")
	}
}
