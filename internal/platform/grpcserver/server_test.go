package grpcserver_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	meshtestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/meshtest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

type probe struct {
	meshtestv1.UnimplementedProbeServiceServer
	// taken holds the records that handlers took to store with their change ("take" requests).
	taken *auditLog
}

func (p probe) describe(ctx context.Context, req *meshtestv1.ProbeRequest) (*meshtestv1.ProbeResponse, error) {
	if req.GetPanic() {
		panic("probe panic")
	}
	if req.GetText() == "take" {
		if rec, ok := audit.Take(ctx, "", "resource-1"); ok {
			p.taken.Record(ctx, rec)
		}
	}
	if req.GetFail() {
		return nil, errors.New("query SELECT secret FROM vault: driver exploded")
	}
	resp := &meshtestv1.ProbeResponse{Text: req.GetText(), RequestId: telemetry.RequestID(ctx)}
	if p := authn.FromContext(ctx); p != nil {
		resp.TenantId, resp.Subject = p.TenantID, p.Subject
	}
	resp.PeerService, _ = mtls.PeerService(ctx)
	return resp, nil
}

func (p probe) Public(ctx context.Context, r *meshtestv1.ProbeRequest) (*meshtestv1.ProbeResponse, error) {
	return p.describe(ctx, r)
}
func (p probe) Authenticated(ctx context.Context, r *meshtestv1.ProbeRequest) (*meshtestv1.ProbeResponse, error) {
	return p.describe(ctx, r)
}
func (p probe) Permitted(ctx context.Context, r *meshtestv1.ProbeRequest) (*meshtestv1.ProbeResponse, error) {
	return p.describe(ctx, r)
}
func (p probe) Internal(ctx context.Context, r *meshtestv1.ProbeRequest) (*meshtestv1.ProbeResponse, error) {
	return p.describe(ctx, r)
}

type auditLog struct {
	mu   sync.Mutex
	recs []audit.Record
}

func (a *auditLog) Record(_ context.Context, r audit.Record) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.recs = append(a.recs, r)
	return nil
}

func (a *auditLog) all() []audit.Record {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]audit.Record(nil), a.recs...)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type harness struct {
	addr  string
	ca    *mtls.CA
	iss   *meshtest.Issuer
	audit *auditLog
	taken *auditLog
	logs  *syncBuffer
}

func start(t *testing.T, extra ...grpcserver.Option) *harness {
	t.Helper()
	h := &harness{ca: mtlstest.NewCA(t), audit: &auditLog{}, taken: &auditLog{}, logs: &syncBuffer{}}
	h.iss = meshtest.NewIssuer(t)
	srv := grpcserver.New(append([]grpcserver.Option{
		grpcserver.WithLogger(telemetry.NewLogger(h.logs, "test", slog.LevelInfo)),
		grpcserver.WithTLS(mtlstest.Source(t, h.ca, "auth").ServerConfig()),
		grpcserver.WithVerifier(h.iss.Verifier()),
		grpcserver.WithAuditor(h.audit),
		grpcserver.WithMaxRecvMsgSize(16 << 10),
		grpcserver.WithValidator(func(_ string, req any) error {
			if r, ok := req.(*meshtestv1.ProbeRequest); ok && r.GetText() == "invalid" {
				var v apperr.Violations
				v.Add("text", "must not be %q", "invalid")
				return v.Err()
			}
			return nil
		}),
	}, extra...)...)
	meshtestv1.RegisterProbeServiceServer(srv.GRPC(), probe{taken: h.taken})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	h.addr = lis.Addr().String()
	return h
}

func (h *harness) conn(t *testing.T, tlsCfg *credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	c, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(*tlsCfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// client returns a probe client with the mesh identity service.
func (h *harness) client(t *testing.T, service string) meshtestv1.ProbeServiceClient {
	t.Helper()
	creds := credentials.NewTLS(mtlstest.Source(t, h.ca, service).ClientConfig("auth"))
	return meshtestv1.NewProbeServiceClient(h.conn(t, &creds))
}

func (h *harness) token(t *testing.T, role, tenant, subject string) string {
	t.Helper()
	return h.iss.Token(t, tenant, rbac.Role(role), subject)
}

func bearer(tok string) context.Context { return meshtest.Bearer(context.Background(), tok) }

func TestAccessRules(t *testing.T) {
	h := start(t)
	gw := h.client(t, "gateway")
	admin := h.token(t, "admin", "t1", "u-admin")
	viewer := h.token(t, "viewer", "t1", "u-viewer")
	req := &meshtestv1.ProbeRequest{Text: "hi"}

	tests := []struct {
		name string
		call func() (*meshtestv1.ProbeResponse, error)
		want codes.Code
	}{
		{"public without credential", func() (*meshtestv1.ProbeResponse, error) { return gw.Public(context.Background(), req) }, codes.OK},
		{"public with a bad credential", func() (*meshtestv1.ProbeResponse, error) { return gw.Public(bearer("garbage"), req) }, codes.Unauthenticated},
		{"authenticated without credential", func() (*meshtestv1.ProbeResponse, error) { return gw.Authenticated(context.Background(), req) }, codes.Unauthenticated},
		{"authenticated with viewer", func() (*meshtestv1.ProbeResponse, error) { return gw.Authenticated(bearer(viewer), req) }, codes.OK},
		{"permission without credential", func() (*meshtestv1.ProbeResponse, error) { return gw.Permitted(context.Background(), req) }, codes.Unauthenticated},
		{"permission denied to viewer", func() (*meshtestv1.ProbeResponse, error) { return gw.Permitted(bearer(viewer), req) }, codes.PermissionDenied},
		{"permission granted to admin", func() (*meshtestv1.ProbeResponse, error) { return gw.Permitted(bearer(admin), req) }, codes.OK},
		{"internal from a mesh identity not on the list", func() (*meshtestv1.ProbeResponse, error) { return gw.Internal(context.Background(), req) }, codes.PermissionDenied},
		{"internal from a user of the wrong identity", func() (*meshtestv1.ProbeResponse, error) { return gw.Internal(bearer(admin), req) }, codes.PermissionDenied},
		{"internal from the allowed identity", func() (*meshtestv1.ProbeResponse, error) {
			return h.client(t, "campaigns").Internal(context.Background(), req)
		}, codes.OK},
		{"internal from the allowed identity relaying a user's credential", func() (*meshtestv1.ProbeResponse, error) {
			return h.client(t, "campaigns").Internal(bearer(admin), req)
		}, codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.call()
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code = %v (%v), want %v", got, err, tt.want)
			}
		})
	}

	resp, err := gw.Authenticated(bearer(admin), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetTenantId() != "t1" || resp.GetSubject() != "u-admin" || resp.GetPeerService() != "gateway" || resp.GetRequestId() == "" {
		t.Fatalf("handler saw %v", resp)
	}
}

func TestAuditRecordsAllowedAndDeniedCalls(t *testing.T) {
	h := start(t)
	gw := h.client(t, "gateway")
	_, _ = gw.Permitted(bearer(h.token(t, "viewer", "t1", "u-viewer")), &meshtestv1.ProbeRequest{})
	_, _ = gw.Permitted(bearer(h.token(t, "admin", "t1", "u-admin")), &meshtestv1.ProbeRequest{})
	_, _ = gw.Public(context.Background(), &meshtestv1.ProbeRequest{}) // not audited
	recs := h.audit.all()
	if len(recs) != 2 {
		t.Fatalf("got %d audit records, want 2: %+v", len(recs), recs)
	}
	if recs[0].Actor != "u-viewer" || recs[0].Outcome != codes.PermissionDenied || recs[0].TenantID != "t1" || recs[0].PeerService != "gateway" {
		t.Errorf("denied record = %+v", recs[0])
	}
	if recs[1].Actor != "u-admin" || recs[1].Outcome != codes.OK || recs[1].Method != meshtestv1.ProbeService_Permitted_FullMethodName {
		t.Errorf("allowed record = %+v", recs[1])
	}
}

// A handler that stores its call's record with its change (access.TakeRecord) gets the record
// the access layer would have written; the access layer then records the call only if it fails.
func TestAuditRecordTakenByTheHandler(t *testing.T) {
	h := start(t)
	gw := h.client(t, "gateway")
	admin := bearer(h.token(t, "admin", "t1", "u-admin"))
	if _, err := gw.Permitted(admin, &meshtestv1.ProbeRequest{Text: "take"}); err != nil {
		t.Fatal(err)
	}
	taken := h.taken.all()
	if len(taken) != 1 {
		t.Fatalf("handler took %d records, want 1", len(taken))
	}
	if r := taken[0]; r.ID == "" || r.Actor != "u-admin" || r.TenantID != "t1" || r.Outcome != codes.OK ||
		r.Resource != "resource-1" || r.Method != meshtestv1.ProbeService_Permitted_FullMethodName || r.PeerService != "gateway" {
		t.Errorf("taken record = %+v", r)
	}
	if recs := h.audit.all(); len(recs) != 0 {
		t.Fatalf("the access layer recorded a call whose handler took its record: %+v", recs)
	}
	// The handler took the record, then failed: its change did not commit, so the failure is
	// recorded by the access layer.
	if _, err := gw.Permitted(admin, &meshtestv1.ProbeRequest{Text: "take", Fail: true}); status.Code(err) != codes.Internal {
		t.Fatalf("failing call: %v", err)
	}
	if recs := h.audit.all(); len(recs) != 1 || recs[0].Outcome != codes.Internal {
		t.Fatalf("records after the failed call: %+v", recs)
	}
	// Calls whose rule does not audit have no record to take.
	if _, err := gw.Authenticated(admin, &meshtestv1.ProbeRequest{Text: "take"}); err != nil {
		t.Fatal(err)
	}
	if n := len(h.taken.all()); n != 2 {
		t.Fatalf("handlers took %d records, want 2 (none from the unaudited call)", n)
	}
}

func TestErrorsNeverRevealInternals(t *testing.T) {
	h := start(t)
	gw := h.client(t, "gateway")
	secretToken := h.token(t, "admin", "t1", "u-admin")

	_, err := gw.Public(bearer(secretToken), &meshtestv1.ProbeRequest{Fail: true})
	st := status.Convert(err)
	failRef := apperr.Ref(st)
	if st.Code() != codes.Internal || failRef == "" || st.Message() != "internal error (ref "+failRef+")" {
		t.Fatalf("unexpected error = %v; want a generic INTERNAL with a ref", err)
	}
	_, err = gw.Public(context.Background(), &meshtestv1.ProbeRequest{Panic: true})
	st = status.Convert(err)
	panicRef := apperr.Ref(st)
	if st.Code() != codes.Internal || panicRef == "" || st.Message() != "internal error (ref "+panicRef+")" {
		t.Fatalf("panic error = %v; want a generic INTERNAL with a ref", err)
	}
	// The server survived the panic.
	if _, err := gw.Public(context.Background(), &meshtestv1.ProbeRequest{}); err != nil {
		t.Fatalf("after panic: %v", err)
	}
	logs := h.logs.String()
	// Each ref is on the one line that holds the detail of its error.
	for ref, detail := range map[string]string{failRef: "driver exploded", panicRef: "probe panic"} {
		var lines []string
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, ref) {
				lines = append(lines, l)
			}
		}
		if len(lines) == 0 || !strings.Contains(lines[0], `"ref":"`+ref+`"`) || !strings.Contains(lines[0], detail) || !strings.Contains(lines[0], `"level":"ERROR"`) {
			t.Errorf("ref %s is not logged with %q at ERROR:\n%s", ref, detail, logs)
		}
	}
	if !strings.Contains(logs, `"request_id"`) {
		t.Errorf("log lines carry no request_id:\n%s", logs)
	}
	if strings.Contains(logs, secretToken) || strings.Contains(logs, strings.Split(secretToken, ".")[2]) {
		t.Error("a bearer token reached the logs")
	}
}

func TestValidationAndSizeLimits(t *testing.T) {
	h := start(t)
	gw := h.client(t, "gateway")
	_, err := gw.Public(context.Background(), &meshtestv1.ProbeRequest{Text: "invalid"})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("code = %v, want InvalidArgument", st.Code())
	}
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	if strings.Join(fields, ",") != "text" {
		t.Fatalf("field violations = %v, want [text]", fields)
	}
	_, err = gw.Public(context.Background(), &meshtestv1.ProbeRequest{Text: strings.Repeat("x", 32<<10)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized message: %v, want ResourceExhausted", err)
	}
}

func TestHealthAndRequestIDPropagation(t *testing.T) {
	h := start(t)
	creds := credentials.NewTLS(mtlstest.Source(t, h.ca, "gateway").ClientConfig("auth"))
	conn := h.conn(t, &creds)
	resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", resp, err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-request-id", "req-123")
	var header metadata.MD
	out, err := meshtestv1.NewProbeServiceClient(conn).Public(ctx, &meshtestv1.ProbeRequest{}, grpc.Header(&header))
	if err != nil {
		t.Fatal(err)
	}
	if out.GetRequestId() != "req-123" || strings.Join(header.Get("x-request-id"), "") != "req-123" {
		t.Fatalf("request id: handler saw %q, header %v", out.GetRequestId(), header.Get("x-request-id"))
	}
}

func TestServerRefusesRPCsWithoutRule(t *testing.T) {
	srv := grpcserver.New(grpcserver.WithLogger(slog.New(slog.DiscardHandler)), grpcserver.WithAuditor(&auditLog{}))
	srv.GRPC().RegisterService(&grpc.ServiceDesc{
		ServiceName: "campaignmesh.unruled.v1.Service",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Do", Handler: func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
			return nil, nil
		}}},
	}, struct{}{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	err = srv.Serve(context.Background(), lis)
	if err == nil || !strings.Contains(err.Error(), "/campaignmesh.unruled.v1.Service/Do") {
		t.Fatalf("Serve = %v; want a refusal naming the method", err)
	}
}

// A server without a durable audit sink does not start: a refused credential would otherwise be
// a log line, not a record (the sink must be given, there is no fallback).
func TestServerRefusesToServeWithoutAuditSink(t *testing.T) {
	srv := grpcserver.New(grpcserver.WithLogger(slog.New(slog.DiscardHandler)))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Serve(ctx, lis)
	if err == nil || !strings.Contains(err.Error(), "audit sink") {
		t.Fatalf("Serve = %v; want a refusal naming the missing audit sink", err)
	}
}
