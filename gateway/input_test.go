package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// restCall sends one REST request through g as an authenticated caller.
func restCall(t testing.TB, g *Gateway, method, target, body string) *httptest.ResponseRecorder {
	t.Helper()
	return restCallAs(t, g, method, target, body, "application/json")
}

// restCallAs is restCall with a body of contentType.
func restCallAs(t testing.TB, g *Gateway, method, target, body, contentType string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, "/", strings.NewReader(body))
	u, err := r.URL.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	r.URL, r.RequestURI = u, target
	r.Header.Set("Authorization", "Bearer any")
	r.Header.Set("Content-Type", contentType)
	w := httptest.NewRecorder()
	g.ServeHTTP(w, r)
	return w
}

type errorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Details []struct {
		FieldViolations []struct {
			Field string `json:"field"`
		} `json:"fieldViolations"`
	} `json:"details"`
}

func (e errorBody) fields() []string {
	var out []string
	for _, d := range e.Details {
		for _, v := range d.FieldViolations {
			out = append(out, v.Field)
		}
	}
	return out
}

// internalText is what no answer may carry: transport, parser and driver wording.
var internalText = []string{"grpc", "proto:", "strconv", "transport", "desc =", "unmarshal", "parsing time", "pq:", "SQL"}

func wantCleanBadRequest(t *testing.T, w *httptest.ResponseRecorder, field string) {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || w.Code != http.StatusBadRequest || e.Code != 3 {
		t.Fatalf("answer %d %s; want 400 INVALID_ARGUMENT", w.Code, w.Body)
	}
	for _, s := range internalText {
		if strings.Contains(e.Message, s) {
			t.Fatalf("message %q carries %q", e.Message, s)
		}
	}
	if f := e.fields(); len(f) != 1 || f[0] != field {
		t.Fatalf("field violations %v; want [%s] (%s)", f, field, w.Body)
	}
}

func TestMalformedRESTInputIsBadRequest(t *testing.T) {
	g, err := New(context.Background(), Config{}, startEchoMesh(t).backends)
	if err != nil {
		t.Fatal(err)
	}
	deep := strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000)
	for _, tc := range []struct{ name, method, target, body, field string }{
		{"invalid utf-8 in a query parameter", "GET", "/v1/campaigns?name_prefix=%ff", "", "name_prefix"},
		{"invalid utf-8 in a path segment", "GET", "/v1/campaigns/%ff%fe", "", "path"},
		{"malformed query escape", "GET", "/v1/campaigns?name_prefix=%zz", "", "query"},
		{"NUL in a path segment", "GET", "/v1/campaigns/a%00b", "", "id"},
		{"NUL in a query parameter", "GET", "/v1/audit/records?method=a%00", "", "method"},
		{"integer out of range in a query", "GET", "/v1/campaigns?page_size=99999999999999999999", "", "page_size"},
		{"time out of range in a query", "GET", "/v1/analytics/summary?start_time=99999-01-01T00:00:00Z", "", "start_time"},
		{"invalid utf-8 in a body", "POST", "/v1/users", "{\"user\":{\"email\":\"a\xffb\"}}", "body"},
		{"NUL in a body string", "POST", "/v1/users", `{"user":{"email":"a\u0000b"}}`, "user.email"},
		{"NUL in event properties", "POST", "/v1/events:batch", `{"events":[{"properties":{"plan":{"tier":"\u0000"}}}]}`, "events[0].properties.plan.tier"},
		{"deeply nested body", "POST", "/v1/events:batch", `{"events":[{"properties":` + deep + `}]}`, "body"},
		{"data after the body", "POST", "/v1/users", `{"password":"x"} x`, "body"},
		{"two bodies", "POST", "/v1/users", `{}{}`, "body"},
		{"truncated body", "POST", "/v1/users", `{"user":`, "body"},
		{"wrong type in a body", "POST", "/v1/users", `{"user":{"email":1}}`, "email"},
		{"integer out of range in a body", "POST", "/v1/campaigns", `{"budget":{"daily_micros":"99999999999999999999999"}}`, "dailyMicros"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCleanBadRequest(t, restCall(t, g, tc.method, tc.target, tc.body), tc.field)
		})
	}
	// A client-streaming route takes a sequence of messages.
	if w := restCall(t, g, "POST", "/v1/events:stream", "{\"events\":[]}\n{\"events\":[]}\n"); w.Code != http.StatusOK {
		t.Fatalf("stream of two messages: %d %s", w.Code, w.Body)
	}
}

func TestTransportErrorsAreGeneric(t *testing.T) {
	// Every backend is unreachable: calls fail inside grpc-go with its connection text.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	var backends []Backend
	for _, b := range startEchoMesh(t).backends {
		conn, err := grpc.NewClient(dead, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		backends = append(backends, Backend{Package: b.Package, Conn: conn, RegisterREST: b.RegisterREST})
	}
	g, err := New(context.Background(), Config{}, backends)
	if err != nil {
		t.Fatal(err)
	}
	w := restCall(t, g, "GET", "/v1/campaigns", "")
	var e errorBody
	_ = json.Unmarshal(w.Body.Bytes(), &e)
	if w.Code < 500 || e.Message == "" {
		t.Fatalf("closed backend: %d %s", w.Code, w.Body)
	}
	for _, s := range internalText {
		if strings.Contains(w.Body.String(), s) {
			t.Fatalf("answer carries %q: %s", s, w.Body)
		}
	}
}

func TestRetryAfterFromBackend(t *testing.T) {
	mesh := startEchoMesh(t)
	g, err := New(context.Background(), Config{}, mesh.backends)
	if err != nil {
		t.Fatal(err)
	}
	// A backend's retry-after header metadata becomes the HTTP header, on success…
	mesh.setHeader(metadata.Pairs("retry-after", "7"))
	if w := restCall(t, g, "GET", "/v1/campaigns", ""); w.Code != http.StatusOK || w.Header().Get("Retry-After") != "7" {
		t.Fatalf("answer %d, Retry-After %q; want 200 with 7", w.Code, w.Header().Get("Retry-After"))
	}
	// …and on a refusal (the login throttle's 429).
	e := apperr.New(apperr.ResourceExhausted, "LOGIN_THROTTLED", "too many attempts")
	mesh.setFail(e)
	if w := restCall(t, g, "POST", "/v1/auth/login", "{}"); w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "7" {
		t.Fatalf("answer %d, Retry-After %q; want 429 with 7", w.Code, w.Header().Get("Retry-After"))
	}
	// A refusal carrying only google.rpc.RetryInfo gets the header too.
	mesh.setHeader(nil)
	e.RetryAfter = 3 * time.Second
	if w := restCall(t, g, "POST", "/v1/auth/login", "{}"); w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "3" {
		t.Fatalf("answer %d, Retry-After %q; want 429 with 3", w.Code, w.Header().Get("Retry-After"))
	}
}

func TestCleanStatus(t *testing.T) {
	ours, _ := apperr.ToStatus(apperr.New(apperr.Unavailable, "AUTH_UNAVAILABLE", "credential cannot be verified right now; retry"))
	backendMasked, backendRef := apperr.Masked()
	const masked = "internal error (ref <new>)"
	for _, tc := range []struct {
		in   *status.Status
		code codes.Code
		msg  string
	}{
		{ours, codes.Unavailable, "credential cannot be verified right now; retry"},
		{backendMasked, codes.Internal, "internal error (ref " + backendRef + ")"}, // the backend logged it under its ref
		{status.New(codes.Internal, "grpc: error while marshaling: string field contains invalid UTF-8"), codes.Internal, masked},
		{status.New(codes.Unknown, "anything at all"), codes.Internal, masked},
		{status.New(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`), codes.Unavailable, "service unavailable; retry later"},
		{status.New(codes.ResourceExhausted, "grpc: received message larger than max (5 vs. 4)"), codes.ResourceExhausted, "message too large or limit exceeded"},
		{status.New(codes.Unimplemented, "unknown service campaignmesh.x.v1.Y"), codes.Unimplemented, "unknown service campaignmesh.x.v1.Y"},
		{status.New(codes.NotFound, "Not Found"), codes.NotFound, "Not Found"},
	} {
		got, ref := cleanStatus(tc.in)
		want, wantRef := tc.msg, false
		if tc.msg == masked {
			want, wantRef = "internal error (ref "+ref+")", true
		}
		if got.Code() != tc.code || got.Message() != want || (ref != "") != wantRef {
			t.Errorf("cleanStatus(%v %q) = %v %q ref %q; want %v %q", tc.in.Code(), tc.in.Message(), got.Code(), got.Message(), ref, tc.code, tc.msg)
		}
	}
}

// A status the gateway masks is logged in full under the ref the caller sees.
func TestMaskedStatusIsLoggedWithItsRef(t *testing.T) {
	var logs bytes.Buffer
	err := status.Error(codes.Internal, "grpc: error while marshaling: string field contains invalid UTF-8")
	st := cleanLogged(context.Background(), slog.New(slog.NewJSONHandler(&logs, nil)), "/campaignmesh.x.v1.S/M", err)
	ref := apperr.Ref(st)
	line := logs.String()
	if ref == "" || !strings.Contains(line, `"ref":"`+ref+`"`) || !strings.Contains(line, "invalid UTF-8") || strings.Count(line, "\n") != 1 {
		t.Fatalf("answer %q, log:\n%s", st.Message(), line)
	}
}
