package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

func TestAuditVerify(t *testing.T) {
	t.Parallel()
	intact := &authv1.VerifyAuditChainResponse{Ok: true, RecordsChecked: 42}
	broken := &authv1.VerifyAuditChainResponse{RecordsChecked: 17, FirstBrokenSequence: 17, Reason: "hash mismatch"}
	tests := []struct {
		name       string
		resp       *authv1.VerifyAuditChainResponse
		output     string
		wantCode   int
		wantStdout string // "" for JSON: stdout must then be resp
	}{
		{name: "intact", resp: intact, output: "table", wantStdout: "audit chain intact: 42 records\n"},
		{name: "broken", resp: broken, output: "table", wantCode: 1, wantStdout: "audit chain BROKEN at sequence 17: hash mismatch (17 records checked)\n"},
		{name: "intact json", resp: intact, output: "json"},
		{name: "broken json", resp: broken, output: "json", wantCode: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := &fakeAuth{verifyAuditChain: func(ctx context.Context, _ *authv1.VerifyAuditChainRequest) (*authv1.VerifyAuditChainResponse, error) {
				if bearer(ctx) != "stored-token" {
					t.Errorf("call carried %q, want stored-token", bearer(ctx))
				}
				return tt.resp, nil
			}}
			c := newTestCLI(t, loggedIn(t, fresh), client)
			if code := c.run(t.Context(), []string{"-o", tt.output, "audit", "verify"}); code != tt.wantCode {
				t.Errorf("exit code = %d, want %d", code, tt.wantCode)
			}
			if c.stderr.Len() != 0 {
				t.Errorf("stderr = %q, want nothing", c.stderr)
			}
			if tt.output == "table" {
				if c.stdout.String() != tt.wantStdout {
					t.Errorf("stdout = %q, want %q", c.stdout, tt.wantStdout)
				}
				return
			}
			var got authv1.VerifyAuditChainResponse
			if err := protojson.Unmarshal(c.stdout.Bytes(), &got); err != nil {
				t.Fatalf("stdout is not a VerifyAuditChainResponse: %v\n%s", err, c.stdout)
			}
			if !proto.Equal(&got, tt.resp) {
				t.Errorf("got %v, want %v", &got, tt.resp)
			}
		})
	}
}

func TestAuditList(t *testing.T) {
	t.Parallel()
	record := &authv1.AuditRecord{
		Sequence:      7,
		Time:          timestamppb.New(testNow.Add(-time.Hour)),
		Actor:         "u1",
		Method:        "/campaignmesh.auth.v1.AuthService/CreateUser",
		Resource:      "u2",
		Outcome:       "PERMISSION_DENIED",
		ClientAddress: "203.0.113.7",
	}
	anonymous := &authv1.AuditRecord{Sequence: 8, Time: timestamppb.New(testNow), Method: "/campaignmesh.auth.v1.AuthService/Login", Outcome: "UNAUTHENTICATED"}
	tests := []struct {
		name    string
		args    []string
		wantReq *authv1.ListAuditRecordsRequest
	}{
		{
			name:    "no filters",
			wantReq: &authv1.ListAuditRecordsRequest{},
		},
		{
			name: "since and short method",
			args: []string{"-since", "24h", "-method", "auth.v1.AuthService/CreateUser", "-outcome", "permission_denied", "-page-size", "10"},
			wantReq: &authv1.ListAuditRecordsRequest{
				StartTime: timestamppb.New(testNow.Add(-24 * time.Hour)),
				Method:    "/campaignmesh.auth.v1.AuthService/CreateUser",
				Outcome:   "PERMISSION_DENIED",
				PageSize:  10,
			},
		},
		{
			name: "start, end, full method and the rest",
			args: []string{"-start", "2026-11-01T00:00:00Z", "-end", "2026-11-02T00:00:00Z", "-actor", "u1", "-method", "/other.v1.S/M", "-resource", "u2", "-outcome", "OK"},
			wantReq: &authv1.ListAuditRecordsRequest{
				StartTime: timestamppb.New(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)),
				EndTime:   timestamppb.New(time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)),
				Actor:     "u1",
				Method:    "/other.v1.S/M",
				Resource:  "u2",
				Outcome:   "OK",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := &fakeAuth{listAuditRecords: func(_ context.Context, req *authv1.ListAuditRecordsRequest) (*authv1.ListAuditRecordsResponse, error) {
				if !proto.Equal(req, tt.wantReq) {
					t.Errorf("request = %v, want %v", req, tt.wantReq)
				}
				return &authv1.ListAuditRecordsResponse{Records: []*authv1.AuditRecord{record, anonymous}}, nil
			}}
			c := newTestCLI(t, loggedIn(t, fresh), client)
			if code := c.run(t.Context(), append([]string{"audit", "list"}, tt.args...)); code != 0 {
				t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
			}
			want := "" +
				"SEQ  TIME                  ACTOR  METHOD                          RESOURCE  OUTCOME            CLIENT\n" +
				"7    2026-11-22T11:00:00Z  u1     auth.v1.AuthService/CreateUser  u2        PERMISSION_DENIED  203.0.113.7\n" +
				"8    2026-11-22T12:00:00Z  -      auth.v1.AuthService/Login                 UNAUTHENTICATED    -\n"
			if c.stdout.String() != want {
				t.Errorf("stdout =\n%s\nwant\n%s", c.stdout, want)
			}
		})
	}
}

func TestParseOutcome(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
	}{
		{"OK", "OK"},
		{"ok", "OK"},
		{"PERMISSION_DENIED", "PERMISSION_DENIED"},
		{"permission_denied", "PERMISSION_DENIED"},
		{"PermissionDenied", "PERMISSION_DENIED"},
		{"Canceled", "CANCELLED"},
		{"cancelled", "CANCELLED"},
		{"DENIED", ""},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := parseOutcome(tt.in)
			if (err != nil) != (tt.want == "") || got != tt.want {
				t.Errorf("parseOutcome(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestShortMethodRoundTrip(t *testing.T) {
	t.Parallel()
	for _, m := range []string{"/campaignmesh.auth.v1.AuthService/Login", "/grpc.health.v1.Health/Check"} {
		if got := fullMethod(shortMethod(m)); got != m {
			t.Errorf("fullMethod(shortMethod(%q)) = %q", m, got)
		}
	}
	if got := shortMethod("/grpc.health.v1.Health/Check"); !strings.HasPrefix(got, "/") {
		t.Errorf("shortMethod shortened a foreign method to %q", got)
	}
}
