package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/campaignmesh/campaignmesh/gateway"
	"github.com/campaignmesh/campaignmesh/gen/openapi"
)

// Every service has its -<name>-addr flag with the mesh's default address, which the
// environment (CM_GATEWAY_<NAME>_ADDR) overrides like any flag.
func TestBackendAddressFlags(t *testing.T) {
	args := []string{"-edge-tls-cert", "e.pem", "-edge-tls-key", "e-key.pem", "-tls-cert", "g.pem", "-tls-key", "g-key.pem", "-tls-ca", "ca.pem",
		"-nats-url", "nats://127.0.0.1:4222", "-nats-user", "gateway", "-nats-password-file", "pw"}
	t.Setenv("CM_GATEWAY_CAMPAIGNS_ADDR", "campaigns:7103")
	s, err := parse(args)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"auth": "127.0.0.1:7101", "ingest": "127.0.0.1:7102", "campaigns": "campaigns:7103",
		"analytics": "127.0.0.1:7104", "dsr": "127.0.0.1:7105", "delivery": "127.0.0.1:7106", "billing": "127.0.0.1:7107"}
	for name, addr := range want {
		if got := s.addrs[name]; got == nil || *got != addr {
			t.Errorf("-%s-addr = %v, want %s", name, got, addr)
		}
	}
	if len(s.addrs) != len(want) {
		t.Errorf("%d backends, want %d", len(s.addrs), len(want))
	}
	s, err = parse(append(args, "-dsr-addr", "dsr.internal:7105"))
	if err != nil || *s.addrs["dsr"] != "dsr.internal:7105" {
		t.Fatalf("-dsr-addr: %v", err)
	}
}

var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// Every operation of the published OpenAPI document is routed to a backend by the gateway as
// this command builds it: with every backend down, each answers UNAVAILABLE (503), never the
// gateway's own 404 for a path it does not serve.
func TestEveryRESTRouteHasABackend(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	var backends []gateway.Backend
	for _, b := range meshBackends {
		conn, err := grpc.NewClient(dead, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		backends = append(backends, gateway.Backend{Package: b.pkg, Conn: conn, RegisterREST: b.rest})
	}
	gw, err := gateway.New(context.Background(), gateway.Config{Logger: slog.New(slog.DiscardHandler)}, backends)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapi.Document, &doc); err != nil {
		t.Fatal(err)
	}
	routes := 0
	for path, ops := range doc.Paths {
		for method := range ops {
			routes++
			target := pathParam.ReplaceAllString(path, "x1")
			r := httptest.NewRequest(strings.ToUpper(method), target, strings.NewReader("{}"))
			r.Header.Set("Authorization", "Bearer any")
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, r)
			if w.Code != http.StatusServiceUnavailable {
				t.Errorf("%s %s: %d %s, want 503 from the backend that is down", strings.ToUpper(method), target, w.Code, w.Body)
			}
		}
	}
	if !strings.Contains(string(openapi.Document), "/v1/dsr/requests") || routes == 0 {
		t.Fatalf("the OpenAPI document has %d routes and none of dsr", routes)
	}
}

// The probes' health-only port is off unless set, by flag or CM_GATEWAY_HEALTH_LISTEN.
func TestHealthListenFlag(t *testing.T) {
	args := []string{"-edge-tls-cert", "e.pem", "-edge-tls-key", "e-key.pem", "-tls-cert", "g.pem", "-tls-key", "g-key.pem", "-tls-ca", "ca.pem",
		"-nats-url", "nats://127.0.0.1:4222", "-nats-user", "gateway", "-nats-password-file", "pw"}
	if s, err := parse(args); err != nil || s.healthListen != "" {
		t.Fatalf("default: %q, %v; want none", s.healthListen, err)
	}
	t.Setenv("CM_GATEWAY_HEALTH_LISTEN", ":8081")
	if s, err := parse(args); err != nil || s.healthListen != ":8081" {
		t.Fatalf("from the environment: %q, %v; want :8081", s.healthListen, err)
	}
}
