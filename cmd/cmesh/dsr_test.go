package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/services/dsr/receipt"
)

// fakeDsr is a DsrService standing in for the gateway with fixed answers, reached through a
// real gRPC connection. It records the requests it gets; calls it does not implement answer
// Unimplemented, and VerifyReceipt fails the test: cmesh verifies receipts itself.
type fakeDsr struct {
	dsrv1.UnimplementedDsrServiceServer
	t *testing.T

	mu       sync.Mutex
	got      []proto.Message
	tokens   []string
	requests []*dsrv1.Request // GetRequest answers these in turn, then the last one again
	export   func(grpc.ServerStreamingServer[dsrv1.DownloadExportResponse]) error
	receipt  *dsrv1.Receipt
	keys     []*dsrv1.ReceiptKey
	policy   *dsrv1.PrivacyPolicy
	update   error // UpdatePrivacyPolicy fails with this
	fail     error // every other call fails with this
}

func (f *fakeDsr) record(ctx context.Context, req proto.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, req)
	f.tokens = append(f.tokens, bearerIn(ctx))
	return f.fail
}

// last returns the last request the server got.
func (f *fakeDsr) last() proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.got) == 0 {
		return nil
	}
	return f.got[len(f.got)-1]
}

func (f *fakeDsr) sample(id string) *dsrv1.Request {
	return &dsrv1.Request{
		Id: id, Kind: dsrv1.Kind_KIND_ERASURE, Regulation: dsrv1.Regulation_REGULATION_GDPR, State: dsrv1.Request_STATE_RUNNING,
		Subject: []*dsrv1.Identifier{{Kind: dsrv1.Identifier_KIND_USER_ID, Value: "u-42"}},
		Covered: []*dsrv1.CoveredIdentifier{
			{Identifier: &dsrv1.Identifier{Kind: dsrv1.Identifier_KIND_USER_ID, Value: "u-42"}, SubjectHash: strings.Repeat("ab", 32)},
			{Identifier: &dsrv1.Identifier{Kind: dsrv1.Identifier_KIND_ANONYMOUS_ID, Value: "anon-7"}, SubjectHash: strings.Repeat("cd", 32), Linked: true, LinkedBy: "analytics"},
		},
		Participants: []*dsrv1.ParticipantStatus{
			{Participant: "analytics", State: dsrv1.ParticipantStatus_STATE_RUNNING, Attempts: 1, Counts: map[string]int64{"events": 1204}},
			{Participant: "auth", State: dsrv1.ParticipantStatus_STATE_RETRYING, Attempts: 3, LastError: "participant unavailable",
				NextAttemptTime: timestamppb.New(testNow.Add(4 * time.Second))},
		},
		CreateTime: timestamppb.New(testNow), DeadlineTime: timestamppb.New(testNow.Add(30 * 24 * time.Hour)), CreatedBy: "u1",
	}
}

func (f *fakeDsr) CreateRequest(ctx context.Context, req *dsrv1.CreateRequestRequest) (*dsrv1.Request, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	r := f.sample("dsr_1")
	r.RequestId = req.GetRequestId()
	return r, nil
}

func (f *fakeDsr) GetRequest(ctx context.Context, req *dsrv1.GetRequestRequest) (*dsrv1.Request, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		return f.sample(req.GetId()), nil
	}
	r := f.requests[0]
	if len(f.requests) > 1 {
		f.requests = f.requests[1:]
	}
	return r, nil
}

func (f *fakeDsr) ListRequests(ctx context.Context, req *dsrv1.ListRequestsRequest) (*dsrv1.ListRequestsResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	if req.GetPageToken() == "" {
		return &dsrv1.ListRequestsResponse{Requests: []*dsrv1.Request{f.sample("dsr_2")}, NextPageToken: "p2"}, nil
	}
	r := f.sample("dsr_1")
	r.Overdue = true
	return &dsrv1.ListRequestsResponse{Requests: []*dsrv1.Request{r}}, nil
}

func (f *fakeDsr) CancelRequest(ctx context.Context, req *dsrv1.CancelRequestRequest) (*dsrv1.Request, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	r := f.sample(req.GetId())
	r.State, r.EndTime = dsrv1.Request_STATE_CANCELLED, timestamppb.New(testNow)
	return r, nil
}

func (f *fakeDsr) ExtendDeadline(ctx context.Context, req *dsrv1.ExtendDeadlineRequest) (*dsrv1.Request, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	r := f.sample(req.GetId())
	r.Extension = &dsrv1.DeadlineExtension{Days: req.GetDays(), Reason: req.GetReason(), CreateTime: timestamppb.New(testNow), ExtendedBy: "u1"}
	return r, nil
}

func (f *fakeDsr) DownloadExport(req *dsrv1.DownloadExportRequest, s grpc.ServerStreamingServer[dsrv1.DownloadExportResponse]) error {
	if err := f.record(s.Context(), req); err != nil {
		return err
	}
	return f.export(s)
}

func (f *fakeDsr) GetReceipt(ctx context.Context, req *dsrv1.GetReceiptRequest) (*dsrv1.Receipt, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return f.receipt, nil
}

func (f *fakeDsr) ListReceiptKeys(ctx context.Context, req *dsrv1.ListReceiptKeysRequest) (*dsrv1.ListReceiptKeysResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &dsrv1.ListReceiptKeysResponse{Keys: f.keys}, nil
}

func (f *fakeDsr) VerifyReceipt(context.Context, *dsrv1.VerifyReceiptRequest) (*dsrv1.VerifyReceiptResponse, error) {
	f.t.Error("cmesh asked the server to verify a receipt")
	return &dsrv1.VerifyReceiptResponse{Valid: true}, nil
}

func (f *fakeDsr) ListSuppressions(ctx context.Context, req *dsrv1.ListSuppressionsRequest) (*dsrv1.ListSuppressionsResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &dsrv1.ListSuppressionsResponse{Suppressions: []*dsrv1.Suppression{
		{SubjectHash: strings.Repeat("ab", 32), DsrRequest: "dsr_1", CreateTime: timestamppb.New(testNow)},
	}}, nil
}

func (f *fakeDsr) GetSuppression(ctx context.Context, req *dsrv1.GetSuppressionRequest) (*dsrv1.Suppression, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	if req.GetValue() == "nobody" {
		return nil, status.Error(codes.NotFound, "not suppressed")
	}
	return &dsrv1.Suppression{SubjectHash: strings.Repeat("ab", 32), DsrRequest: "dsr_1", CreateTime: timestamppb.New(testNow)}, nil
}

func (f *fakeDsr) GetPrivacyPolicy(ctx context.Context, req *dsrv1.GetPrivacyPolicyRequest) (*dsrv1.PrivacyPolicy, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return proto.Clone(f.policy).(*dsrv1.PrivacyPolicy), nil
}

func (f *fakeDsr) UpdatePrivacyPolicy(ctx context.Context, req *dsrv1.UpdatePrivacyPolicyRequest) (*dsrv1.PrivacyPolicy, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	if f.update != nil {
		return nil, f.update
	}
	p := proto.Clone(req.GetPolicy()).(*dsrv1.PrivacyPolicy)
	p.Version++
	p.Etag = "etag-2"
	return p, nil
}

// newDsrCLI returns a CLI whose gateway serves srv over an in-memory connection; with
// loggedInToo its credentials hold a fresh access token.
func newDsrCLI(t *testing.T, srv *fakeDsr, logged bool) *testCLI {
	t.Helper()
	srv.t = t
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	dsrv1.RegisterDsrServiceServer(s, srv)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	var env map[string]string
	if logged {
		env = loggedIn(t, fresh)
	}
	c := newTestCLI(t, env, nil)
	c.dial = func(*app) (authv1.AuthServiceClient, io.Closer, error) {
		c.dials++
		conn, err := grpc.NewClient("passthrough:///gateway",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		return authv1.NewAuthServiceClient(conn), conn, nil
	}
	return c
}

func TestDsrRequests(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		args   []string
		want   proto.Message
		output []string
	}{
		{
			name: "create an erasure for several identifiers",
			args: []string{"dsr", "create", "-kind", "erasure", "-regulation", "GDPR", "-user-id", "u-42", "-email", "a@example.com",
				"-anonymous-id", "anon-7", "-email", "b@example.com", "-request-id", "dsr-create-1"},
			want: &dsrv1.CreateRequestRequest{RequestId: "dsr-create-1", Request: &dsrv1.Request{
				Kind: dsrv1.Kind_KIND_ERASURE, Regulation: dsrv1.Regulation_REGULATION_GDPR,
				Subject: []*dsrv1.Identifier{
					{Kind: dsrv1.Identifier_KIND_USER_ID, Value: "u-42"}, {Kind: dsrv1.Identifier_KIND_ANONYMOUS_ID, Value: "anon-7"},
					{Kind: dsrv1.Identifier_KIND_EMAIL, Value: "a@example.com"}, {Kind: dsrv1.Identifier_KIND_EMAIL, Value: "b@example.com"},
				},
			}},
			output: []string{"ID dsr_1", "KIND erasure (gdpr)", "STATE running", "SUBJECT user_id u-42", "COVERED user_id u-42 hash abababababababab…",
				"anonymous_id anon-7 hash cdcdcdcdcdcdcdcd… (linked by analytics)", "DEADLINE 2026-12-22T12:00:00Z", "REQUEST ID dsr-create-1",
				"PARTICIPANT STATE ATTEMPTS COUNTS UPDATED LAST ERROR", "analytics running 1 events=1204 - -",
				"auth retrying (next 2026-11-22T12:00:04Z) 3 - - participant unavailable"},
		},
		{
			name:   "get",
			args:   []string{"dsr", "get", "dsr_9"},
			want:   &dsrv1.GetRequestRequest{Id: "dsr_9"},
			output: []string{"ID dsr_9", "CREATED 2026-11-22T12:00:00Z by u1"},
		},
		{
			name:   "list every page with filters",
			args:   []string{"dsr", "list", "-state", "running,received", "-kind", "erasure", "-overdue", "-all"},
			want:   &dsrv1.ListRequestsRequest{States: []dsrv1.Request_State{dsrv1.Request_STATE_RUNNING, dsrv1.Request_STATE_RECEIVED}, Kinds: []dsrv1.Kind{dsrv1.Kind_KIND_ERASURE}, Overdue: true, PageToken: "p2"},
			output: []string{"ID KIND STATE CREATED DEADLINE SUBJECT", "dsr_2 erasure (gdpr) running", "dsr_1 erasure (gdpr) running 2026-11-22T12:00:00Z 2026-12-22T12:00:00Z OVERDUE user_id u-42"},
		},
		{
			name:   "cancel",
			args:   []string{"dsr", "cancel", "dsr_3"},
			want:   &dsrv1.CancelRequestRequest{Id: "dsr_3"},
			output: []string{"STATE cancelled", "ENDED 2026-11-22T12:00:00Z"},
		},
		{
			name:   "extend",
			args:   []string{"dsr", "extend", "-days", "45", "-reason", "many systems to search", "dsr_4"},
			want:   &dsrv1.ExtendDeadlineRequest{Id: "dsr_4", Days: 45, Reason: "many systems to search"},
			output: []string{"EXTENDED +45 days on 2026-11-22T12:00:00Z by u1: many systems to search"},
		},
		{
			name:   "suppressions list",
			args:   []string{"dsr", "suppressions", "list"},
			want:   &dsrv1.ListSuppressionsRequest{},
			output: []string{"SUBJECT HASH REQUEST SUPPRESSED", strings.Repeat("ab", 32) + " dsr_1 2026-11-22T12:00:00Z"},
		},
		{
			name:   "suppression by value",
			args:   []string{"dsr", "suppressions", "get", "a@example.com"},
			want:   &dsrv1.GetSuppressionRequest{Value: "a@example.com"},
			output: []string{"dsr_1"},
		},
		{
			name:   "suppression by hash",
			args:   []string{"dsr", "suppressions", "get", "-hash", "abab"},
			want:   &dsrv1.GetSuppressionRequest{SubjectHash: "abab"},
			output: []string{"dsr_1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := &fakeDsr{}
			c := newDsrCLI(t, srv, true)
			if code := c.run(t.Context(), tt.args); code != 0 {
				t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
			}
			if got := srv.last(); !proto.Equal(got, tt.want) {
				t.Errorf("request = %v\nwant      %v", got, tt.want)
			}
			for _, tok := range srv.tokens {
				if tok != "Bearer stored-token" {
					t.Errorf("a call carried %q, want the stored token", tok)
				}
			}
			if tt.args[1] == "create" && c.stderr.String() != "follow its progress: cmesh dsr watch dsr_1\n" {
				t.Errorf("stderr = %q, want the hint to watch", c.stderr)
			}
			out := squeeze(c.stdout.String())
			for _, want := range tt.output {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, c.stdout)
				}
			}
		})
	}
}

func TestDsrJSONOutputAndErrors(t *testing.T) {
	t.Parallel()
	c := newDsrCLI(t, &fakeDsr{}, true)
	if code := c.run(t.Context(), []string{"-o", "json", "dsr", "get", "dsr_5"}); code != 0 {
		t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
	}
	var r dsrv1.Request
	if err := protojson.Unmarshal(c.stdout.Bytes(), &r); err != nil || r.GetId() != "dsr_5" || len(r.GetParticipants()) != 2 {
		t.Fatalf("json output %q: %v", c.stdout, err)
	}

	c = newDsrCLI(t, &fakeDsr{fail: status.Error(codes.NotFound, "request not found")}, true)
	if code := c.run(t.Context(), []string{"dsr", "get", "dsr_other_tenant"}); code != 1 {
		t.Errorf("exit code = %d, want 1", code)
	}
	if want := "cmesh: request not found (NotFound)\n"; c.stderr.String() != want {
		t.Errorf("stderr = %q, want %q", c.stderr, want)
	}
	// A create whose answer is lost tells how to repeat it without creating twice.
	c = newDsrCLI(t, &fakeDsr{fail: status.Error(codes.Unavailable, "service unavailable; retry later")}, true)
	if code := c.run(t.Context(), []string{"dsr", "create", "-kind", "access", "-regulation", "ccpa", "-email", "a@example.com", "-request-id", "r-7"}); code != 1 ||
		!strings.Contains(c.stderr.String(), "-request-id r-7") {
		t.Errorf("exit code = %d, stderr:\n%s", code, c.stderr)
	}
	c = newDsrCLI(t, &fakeDsr{}, true)
	if code := c.run(t.Context(), []string{"dsr", "suppressions", "get", "nobody"}); code != 1 || !strings.Contains(c.stderr.String(), "not suppressed (NotFound)") {
		t.Errorf("an identifier not suppressed: exit %d, stderr:\n%s", code, c.stderr)
	}
}

func TestDsrUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"dsr", "create", "-kind", "erasure", "-user-id", "u"}, "-kind and -regulation are required"},
		{[]string{"dsr", "create", "-kind", "delete", "-regulation", "gdpr", "-user-id", "u"}, `-kind "delete": want one of access, erasure, suppress, unsuppress`},
		{[]string{"dsr", "create", "-kind", "erasure", "-regulation", "hipaa", "-user-id", "u"}, `-regulation "hipaa": want one of ccpa, gdpr`},
		{[]string{"dsr", "create", "-kind", "erasure", "-regulation", "gdpr"}, "name the subject with -user-id, -anonymous-id or -email"},
		{[]string{"dsr", "create", "-kind", "erasure", "-regulation", "gdpr", "-email", " "}, "an identifier is empty"},
		{[]string{"dsr", "create", "-kind", "erasure", "-regulation", "gdpr", "-email", "a@b", "-request-id", "a b"}, "want 1-64 of A-Za-z0-9._-"},
		{[]string{"dsr", "get"}, "dsr get: want ID, got 0 argument(s)"},
		{[]string{"dsr", "list", "-state", "done"}, `-state "done": want one of`},
		{[]string{"dsr", "list", "-kind", "delete"}, `-kind "delete": want one of`},
		{[]string{"dsr", "extend", "-reason", "x", "dsr_1"}, "-days 0: want 1 to 60"},
		{[]string{"dsr", "extend", "-days", "61", "-reason", "x", "dsr_1"}, "-days 61: want 1 to 60"},
		{[]string{"dsr", "extend", "-days", "10", "dsr_1"}, "-reason is required"},
		{[]string{"dsr", "extend", "dsr_1", "-days", "10"}, "want ID, got 3 argument(s)"}, // flags come before the ID
		{[]string{"dsr", "watch", "-interval", "1ms", "dsr_1"}, "want at least 100ms"},
		{[]string{"dsr", "export"}, "dsr export: want ID"},
		{[]string{"dsr", "receipt", "verify"}, "dsr receipt verify: want FILE"},
		{[]string{"dsr", "receipt", "frob"}, `unknown command "dsr receipt frob"`},
		{[]string{"dsr", "suppressions", "get"}, "give the identifier's VALUE or -hash"},
		{[]string{"dsr", "suppressions", "get", "-hash", "ab", "v"}, "give VALUE or -hash, not both"},
		{[]string{"dsr", "suppressions", "get", "a", "b"}, "want [VALUE], got 2 argument(s)"},
		{[]string{"privacy", "policy", "set"}, "give at least one setting to change"},
		{[]string{"privacy", "policy", "set", "-hash", "email", "-drop", "email"}, `property "email" is given to both -hash and -drop`},
		{[]string{"privacy", "policy", "set", "-hash", ","}, "-hash: give property keys"},
		{[]string{"privacy", "policy", "set", "-ip", "mask"}, `-ip "mask": want one of drop, keep, truncate`},
		{[]string{"privacy", "policy", "set", "-user-agent", "truncate"}, `-user-agent "truncate": want one of drop, keep`},
		{[]string{"privacy", "policy", "set", "-default", "none"}, `-default "none": want one of drop, hash, keep`},
		{[]string{"privacy", "policy", "set", "-retention-days", "4000"}, "-retention-days 4000: want 0 to 3650"},
		{[]string{"privacy", "frob"}, `unknown command "privacy frob"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			c := newTestCLI(t, nil, nil)
			if code := c.run(context.Background(), tt.args); code != 2 {
				t.Errorf("exit code = %d, want 2; stderr:\n%s", code, c.stderr)
			}
			if !strings.Contains(c.stderr.String(), tt.want) {
				t.Errorf("stderr does not contain %q:\n%s", tt.want, c.stderr)
			}
		})
	}
}

// watch prints a line when the request's state or a participant's progress changes, not on
// every poll, and its exit code says how the request ended.
func TestDsrWatch(t *testing.T) {
	t.Parallel()
	step := func(state dsrv1.Request_State, analytics, auth dsrv1.ParticipantStatus_State, events int64) *dsrv1.Request {
		return &dsrv1.Request{Id: "dsr_1", Kind: dsrv1.Kind_KIND_ACCESS, State: state, FailureReason: map[bool]string{true: "auth refused: invalid email"}[state == dsrv1.Request_STATE_FAILED],
			Participants: []*dsrv1.ParticipantStatus{
				{Participant: "analytics", State: analytics, Attempts: 1, Counts: map[string]int64{"events": events}},
				{Participant: "auth", State: auth},
			}}
	}
	linked := func(r *dsrv1.Request) *dsrv1.Request {
		r.Covered = []*dsrv1.CoveredIdentifier{
			{Identifier: &dsrv1.Identifier{Kind: dsrv1.Identifier_KIND_USER_ID, Value: "u-42"}},
			{Identifier: &dsrv1.Identifier{Kind: dsrv1.Identifier_KIND_ANONYMOUS_ID, Value: "anon-7"}, Linked: true, LinkedBy: "analytics"},
		}
		return r
	}
	running := dsrv1.ParticipantStatus_STATE_RUNNING
	done, pending := dsrv1.ParticipantStatus_STATE_DONE, dsrv1.ParticipantStatus_STATE_PENDING
	srv := &fakeDsr{requests: []*dsrv1.Request{
		step(dsrv1.Request_STATE_RECEIVED, pending, pending, 0),
		step(dsrv1.Request_STATE_RUNNING, running, pending, 10),
		step(dsrv1.Request_STATE_RUNNING, running, pending, 10), // unchanged: no line
		linked(step(dsrv1.Request_STATE_RUNNING, running, pending, 10)),
		linked(step(dsrv1.Request_STATE_RUNNING, done, running, 25)),
		linked(step(dsrv1.Request_STATE_COMPLETED, done, done, 25)),
	}}
	c := newDsrCLI(t, srv, true)
	if code := c.run(t.Context(), []string{"dsr", "watch", "-interval", "100ms", "dsr_1"}); code != 0 {
		t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
	}
	lines := strings.Split(strings.TrimSpace(c.stdout.String()), "\n")
	want := []string{
		"2026-11-22T12:00:00Z received analytics: pending (1 attempt) events=0 auth: pending",
		"2026-11-22T12:00:00Z running analytics: running (1 attempt) events=10 auth: pending",
		"2026-11-22T12:00:00Z running 2 identifiers analytics: running (1 attempt) events=10 auth: pending",
		"2026-11-22T12:00:00Z running 2 identifiers analytics: done (1 attempt) events=25 auth: running",
		"2026-11-22T12:00:00Z completed 2 identifiers analytics: done (1 attempt) events=25 auth: done",
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), c.stdout)
	}
	for i := range want {
		if squeeze(lines[i]) != want[i] {
			t.Errorf("line %d = %q, want %q", i, squeeze(lines[i]), want[i])
		}
	}
	if !strings.Contains(c.stderr.String(), "cmesh dsr export -o FILE dsr_1") || !strings.Contains(c.stderr.String(), "cmesh dsr receipt get -o FILE dsr_1") {
		t.Errorf("stderr lacks the next steps:\n%s", c.stderr)
	}

	srv = &fakeDsr{requests: []*dsrv1.Request{step(dsrv1.Request_STATE_RUNNING, running, pending, 1), step(dsrv1.Request_STATE_FAILED, done, dsrv1.ParticipantStatus_STATE_FAILED, 1)}}
	c = newDsrCLI(t, srv, true)
	if code := c.run(t.Context(), []string{"-o", "json", "dsr", "watch", "-interval", "100ms", "dsr_1"}); code != 1 {
		t.Fatalf("failed request: exit code = %d, want 1", code)
	}
	if !strings.Contains(c.stderr.String(), "request dsr_1 failed: auth refused: invalid email") {
		t.Errorf("stderr = %q", c.stderr)
	}
	lines = strings.Split(strings.TrimSpace(c.stdout.String()), "\n")
	var last dsrv1.Request
	if err := protojson.Unmarshal([]byte(lines[len(lines)-1]), &last); len(lines) != 2 || err != nil || last.GetState() != dsrv1.Request_STATE_FAILED {
		t.Errorf("json lines:\n%s", c.stdout)
	}
}

func exportServer(records int, claim int64) func(grpc.ServerStreamingServer[dsrv1.DownloadExportResponse]) error {
	return func(s grpc.ServerStreamingServer[dsrv1.DownloadExportResponse]) error {
		m := &dsrv1.ExportManifest{Records: map[string]int64{"analytics": claim - 1, "auth": 1}, Bytes: 512, ExpireTime: timestamppb.New(testNow.Add(7 * 24 * time.Hour))}
		if err := s.Send(&dsrv1.DownloadExportResponse{Item: &dsrv1.DownloadExportResponse_Manifest{Manifest: m}}); err != nil {
			return err
		}
		for i := range records {
			data, _ := structpb.NewStruct(map[string]any{"n": i, "name": "purchase"})
			rec := &dsrv1.ExportRecord{Participant: "analytics", Type: "event", Data: data}
			if err := s.Send(&dsrv1.DownloadExportResponse{Item: &dsrv1.DownloadExportResponse_Record{Record: rec}}); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestDsrExport(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "export.ndjson")
	c := newDsrCLI(t, &fakeDsr{export: exportServer(3, 3)}, true)
	if code := c.run(t.Context(), []string{"dsr", "export", "-o", file, "dsr_1"}); code != 0 {
		t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	for i, l := range lines {
		var rec struct {
			Participant, Type string
			Data              map[string]any
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec.Type != "event" || rec.Data["n"] != float64(i) {
			t.Errorf("line %d = %q (%v)", i, l, err)
		}
	}
	if len(lines) != 3 || c.stdout.Len() != 0 {
		t.Errorf("%d lines in the file, stdout %q", len(lines), c.stdout)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("export file mode: %v %v, want 0600", fi.Mode(), err)
	}
	for _, want := range []string{"analytics 2", "auth 1", "3 records (512 bytes) to " + file, "deleted 2026-11-29T12:00:00Z"} {
		if !strings.Contains(squeeze(c.stderr.String()), want) {
			t.Errorf("stderr lacks %q:\n%s", want, c.stderr)
		}
	}

	// To stdout, as NDJSON.
	c = newDsrCLI(t, &fakeDsr{export: exportServer(2, 2)}, true)
	if code := c.run(t.Context(), []string{"dsr", "export", "dsr_1"}); code != 0 || strings.Count(c.stdout.String(), "\n") != 2 {
		t.Fatalf("to stdout: exit %d, stdout %q, stderr:\n%s", code, c.stdout, c.stderr)
	}

	// Fewer records than the manifest counts: an error, and no file.
	incomplete := filepath.Join(dir, "incomplete.ndjson")
	c = newDsrCLI(t, &fakeDsr{export: exportServer(2, 3)}, true)
	if code := c.run(t.Context(), []string{"dsr", "export", "-o", incomplete, "dsr_1"}); code != 1 || !strings.Contains(c.stderr.String(), "export incomplete: 2 records received, the manifest says 3") {
		t.Fatalf("incomplete: exit %d, stderr:\n%s", code, c.stderr)
	}
	// A failure mid-stream: the server's error, and no file either.
	c = newDsrCLI(t, &fakeDsr{export: func(s grpc.ServerStreamingServer[dsrv1.DownloadExportResponse]) error {
		if err := exportServer(1, 5)(s); err != nil {
			return err
		}
		return status.Error(codes.NotFound, "export expired")
	}}, true)
	if code := c.run(t.Context(), []string{"dsr", "export", "-o", incomplete, "dsr_1"}); code != 1 || !strings.Contains(c.stderr.String(), "export expired (NotFound)") {
		t.Fatalf("failed: exit %d, stderr:\n%s", code, c.stderr)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("files left in the directory: %v, want only the complete export", entries)
	}
}

// signedReceipt returns a receipt signed with a fresh Ed25519 key and that key as
// ListReceiptKeys lists it.
func signedReceipt(t *testing.T, keyID string) (*dsrv1.Receipt, *dsrv1.ReceiptKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	canonical, err := receipt.Canonical(receipt.Document{Version: receipt.Version, RequestID: "dsr_1", Tenant: "t1", Kind: "KIND_ERASURE",
		Regulation: "REGULATION_GDPR", SubjectHashes: []string{strings.Repeat("ab", 32)}, CoveredHashes: []string{strings.Repeat("ab", 32)},
		Participants: []receipt.Participant{{Name: "analytics", Outcome: "done", Counts: map[string]int64{"events": 1204}}},
		CreateTime:   receipt.FormatTime(testNow), DeadlineTime: receipt.FormatTime(testNow.AddDate(0, 0, 30)), CompleteTime: receipt.FormatTime(testNow)})
	if err != nil {
		t.Fatal(err)
	}
	payload := string(canonical)
	return &dsrv1.Receipt{Payload: payload, Signature: ed25519.Sign(priv, []byte(payload)), KeyId: keyID},
		&dsrv1.ReceiptKey{KeyId: keyID, Algorithm: "Ed25519", PublicKey: pub, CreateTime: timestamppb.New(testNow)}
}

// Every single changed byte of the payload, and a changed signature, key id or key, fails.
func TestVerifyReceipt(t *testing.T) {
	t.Parallel()
	r, key := signedReceipt(t, "rk1")
	_, other := signedReceipt(t, "rk0")
	keys := []*dsrv1.ReceiptKey{other, key}
	if err := verifyReceipt(r, keys); err != nil {
		t.Fatalf("valid receipt: %v", err)
	}
	for i := range len(r.GetPayload()) {
		tampered := proto.Clone(r).(*dsrv1.Receipt)
		b := []byte(tampered.Payload)
		b[i] ^= 0x01
		tampered.Payload = string(b)
		if err := verifyReceipt(tampered, keys); err == nil || !strings.Contains(err.Error(), "signature mismatch") {
			t.Fatalf("payload byte %d changed: %v", i, err)
		}
	}
	for i := range len(r.GetSignature()) {
		tampered := proto.Clone(r).(*dsrv1.Receipt)
		tampered.Signature[i] ^= 0x80
		if err := verifyReceipt(tampered, keys); err == nil {
			t.Fatalf("signature byte %d changed: verified", i)
		}
	}
	for name, tc := range map[string]struct {
		change func(*dsrv1.Receipt)
		keys   []*dsrv1.ReceiptKey
		want   string
	}{
		"unknown key":          {func(r *dsrv1.Receipt) { r.KeyId = "rk9" }, keys, `unknown key "rk9"`},
		"another key's id":     {func(r *dsrv1.Receipt) { r.KeyId = "rk0" }, keys, "signature mismatch"},
		"no keys":              {func(*dsrv1.Receipt) {}, nil, `unknown key "rk1"`},
		"no signature":         {func(r *dsrv1.Receipt) { r.Signature = nil }, keys, "not a signed receipt"},
		"short signature":      {func(r *dsrv1.Receipt) { r.Signature = r.Signature[:63] }, keys, "signature mismatch"},
		"appended to payload":  {func(r *dsrv1.Receipt) { r.Payload += " " }, keys, "signature mismatch"},
		"not an Ed25519 key":   {func(*dsrv1.Receipt) {}, []*dsrv1.ReceiptKey{{KeyId: "rk1", Algorithm: "RSA", PublicKey: key.GetPublicKey()}}, `unknown key "rk1"`},
		"truncated public key": {func(*dsrv1.Receipt) {}, []*dsrv1.ReceiptKey{{KeyId: "rk1", Algorithm: "Ed25519", PublicKey: key.GetPublicKey()[:31]}}, `unknown key "rk1"`},
	} {
		tampered := proto.Clone(r).(*dsrv1.Receipt)
		tc.change(tampered)
		if err := verifyReceipt(tampered, tc.keys); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

// The commands end to end: get a receipt and the keys into files, verify offline and
// online (keys fetched, never the server's verdict, no login needed), and a tampered file
// fails with exit code 1.
func TestReceiptCommands(t *testing.T) {
	t.Parallel()
	r, key := signedReceipt(t, "rk1")
	dir := t.TempDir()
	receiptFile, keysFile := filepath.Join(dir, "receipt.json"), filepath.Join(dir, "keys.json")
	srv := &fakeDsr{receipt: r, keys: []*dsrv1.ReceiptKey{key}}
	c := newDsrCLI(t, srv, true)
	if code := c.run(t.Context(), []string{"dsr", "receipt", "get", "-o", receiptFile, "dsr_1"}); code != 0 {
		t.Fatalf("receipt get: exit %d\n%s", code, c.stderr)
	}
	if got := srv.last(); !proto.Equal(got, &dsrv1.GetReceiptRequest{Id: "dsr_1"}) {
		t.Errorf("request %v", got)
	}
	c = newDsrCLI(t, srv, false) // public: no login
	if code := c.run(t.Context(), []string{"dsr", "receipt", "keys", "-o", keysFile}); code != 0 {
		t.Fatalf("receipt keys: exit %d\n%s", code, c.stderr)
	}
	c = newDsrCLI(t, srv, false)
	if code := c.run(t.Context(), []string{"dsr", "receipt", "keys"}); code != 0 || !strings.Contains(squeeze(c.stdout.String()), "rk1 Ed25519 2026-11-22T12:00:00Z") {
		t.Fatalf("receipt keys: exit %d\n%s%s", code, c.stdout, c.stderr)
	}

	verify := func(t *testing.T, file string, offline bool) (int, string, string) {
		t.Helper()
		args := []string{"dsr", "receipt", "verify", file}
		if offline {
			args = []string{"dsr", "receipt", "verify", "-keys", keysFile, file}
		}
		c := newDsrCLI(t, srv, false)
		code := c.run(t.Context(), args)
		if offline && c.dials != 0 {
			t.Errorf("offline verification dialled the gateway")
		}
		if !offline && c.dials != 1 {
			t.Errorf("online verification dialled %d times, want 1", c.dials)
		}
		return code, c.stdout.String(), c.stderr.String()
	}
	for _, offline := range []bool{true, false} {
		if code, out, errOut := verify(t, receiptFile, offline); code != 0 || out != "receipt valid: signed by key rk1\n" {
			t.Errorf("offline=%v: exit %d, %q %q", offline, code, out, errOut)
		}
	}

	// One byte of the payload changed in the file: "1204" events become "1205".
	data, err := os.ReadFile(receiptFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "1204") {
		t.Fatalf("receipt file %s", data)
	}
	tampered := filepath.Join(dir, "tampered.json")
	if err := os.WriteFile(tampered, []byte(strings.Replace(string(data), "1204", "1205", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, offline := range []bool{true, false} {
		if code, out, _ := verify(t, tampered, offline); code != 1 || !strings.Contains(out, "receipt INVALID: signature mismatch") {
			t.Errorf("tampered, offline=%v: exit %d, %q", offline, code, out)
		}
	}
	// From stdin.
	c = newDsrCLI(t, srv, false)
	c.stdin.Reset(string(data))
	if code := c.run(t.Context(), []string{"dsr", "receipt", "verify", "-keys", keysFile, "-"}); code != 0 || c.stdout.String() != "receipt valid: signed by key rk1\n" {
		t.Errorf("from stdin: exit %d, %q %q", code, c.stdout, c.stderr)
	}
	// Another key id: unknown.
	otherKey := filepath.Join(dir, "other-key.json")
	if err := os.WriteFile(otherKey, []byte(strings.Replace(string(data), `"rk1"`, `"rk2"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := verify(t, otherKey, true); code != 1 || !strings.Contains(out, `receipt INVALID: unknown key "rk2"`) {
		t.Errorf("unknown key: exit %d, %q", code, out)
	}
	// Not a receipt at all.
	if err := os.WriteFile(tampered, []byte(`{"payload": "x", "extra": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := verify(t, tampered, true); code != 1 || !strings.Contains(errOut, "is not a Receipt in JSON") {
		t.Errorf("not a receipt: exit %d, %q", code, errOut)
	}
	// JSON output is the server's verdict shape.
	c = newDsrCLI(t, srv, false)
	code := c.run(t.Context(), []string{"-o", "json", "dsr", "receipt", "verify", "-keys", keysFile, otherKey})
	var verdict dsrv1.VerifyReceiptResponse
	if err := protojson.Unmarshal(c.stdout.Bytes(), &verdict); code != 1 || err != nil || verdict.GetValid() || verdict.GetReason() != `unknown key "rk2"` {
		t.Errorf("json verdict: exit %d, %s (%v)", code, c.stdout, err)
	}
}

func TestPrivacyPolicy(t *testing.T) {
	t.Parallel()
	policy := &dsrv1.PrivacyPolicy{
		RetentionDays: 90, Version: 3, Etag: "etag-1", UpdateTime: timestamppb.New(testNow),
		PropertyRules: []*dsrv1.PrivacyPolicy_PropertyRule{
			{Key: "email", Action: dsrv1.PrivacyPolicy_PROPERTY_ACTION_HASH}, {Key: "plan", Action: dsrv1.PrivacyPolicy_PROPERTY_ACTION_KEEP},
		},
	}
	srv := &fakeDsr{policy: policy}
	c := newDsrCLI(t, srv, true)
	if code := c.run(t.Context(), []string{"privacy", "policy", "get"}); code != 0 {
		t.Fatalf("get: exit %d\n%s", code, c.stderr)
	}
	for _, want := range []string{"RETENTION 90 days", "DEFAULT keep", "PROPERTIES email=hash, plan=keep", "IP keep", "USER AGENT keep", "VERSION 3", "ETAG etag-1"} {
		if !strings.Contains(squeeze(c.stdout.String()), want) {
			t.Errorf("get lacks %q:\n%s", want, c.stdout)
		}
	}

	c = newDsrCLI(t, srv, true)
	if code := c.run(t.Context(), []string{"privacy", "policy", "set", "-drop", "phone,plan", "-hash", "ssn", "-ip", "truncate", "-user-agent", "drop"}); code != 0 {
		t.Fatalf("set: exit %d\n%s", code, c.stderr)
	}
	want := &dsrv1.UpdatePrivacyPolicyRequest{
		Policy: &dsrv1.PrivacyPolicy{
			RetentionDays: 90, Version: 3, Etag: "etag-1", UpdateTime: timestamppb.New(testNow),
			IpHandling: dsrv1.PrivacyPolicy_IP_HANDLING_TRUNCATE, UserAgentHandling: dsrv1.PrivacyPolicy_USER_AGENT_HANDLING_DROP,
			PropertyRules: []*dsrv1.PrivacyPolicy_PropertyRule{
				{Key: "email", Action: dsrv1.PrivacyPolicy_PROPERTY_ACTION_HASH}, {Key: "phone", Action: dsrv1.PrivacyPolicy_PROPERTY_ACTION_DROP},
				{Key: "plan", Action: dsrv1.PrivacyPolicy_PROPERTY_ACTION_DROP}, {Key: "ssn", Action: dsrv1.PrivacyPolicy_PROPERTY_ACTION_HASH},
			},
		},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"property_rules", "ip_handling", "user_agent_handling"}},
		Etag:       "etag-1",
	}
	if got := srv.last(); !proto.Equal(got, want) {
		t.Errorf("update = %v\nwant     %v", got, want)
	}
	if !strings.Contains(squeeze(c.stdout.String()), "PROPERTIES email=hash, phone=drop, plan=drop, ssn=hash") || !strings.Contains(c.stdout.String(), "etag-2") {
		t.Errorf("set shows:\n%s", c.stdout)
	}

	c = newDsrCLI(t, srv, true)
	if code := c.run(t.Context(), []string{"privacy", "policy", "set", "-retention-days", "0", "-default", "drop"}); code != 0 {
		t.Fatalf("set: exit %d\n%s", code, c.stderr)
	}
	got := srv.last().(*dsrv1.UpdatePrivacyPolicyRequest)
	if strings.Join(got.GetUpdateMask().GetPaths(), ",") != "retention_days,default_property_action" || got.GetPolicy().GetRetentionDays() != 0 ||
		got.GetPolicy().GetDefaultPropertyAction() != dsrv1.PrivacyPolicy_PROPERTY_ACTION_DROP {
		t.Errorf("update = %v", got)
	}

	// Somebody changed the policy between the read and the write.
	srv.update = status.Error(codes.Aborted, "the policy changed; read it again")
	c = newDsrCLI(t, srv, true)
	if code := c.run(t.Context(), []string{"privacy", "policy", "set", "-ip", "drop"}); code != 1 {
		t.Fatalf("aborted: exit %d", code)
	}
	if want := "cmesh: the policy was changed by someone else after it was read; nothing was changed, run the command again: the policy changed; read it again (Aborted)\n"; c.stderr.String() != want {
		t.Errorf("stderr = %q, want %q", c.stderr, want)
	}
}

// bearerIn is the authorization metadata a server got ("" when none).
func bearerIn(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	return strings.Join(md.Get("authorization"), ",")
}
