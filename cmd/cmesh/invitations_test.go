package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

// fakeInvitations is fakeAuth with the invitation RPCs.
type fakeInvitations struct {
	fakeAuth
	createInvitation       func(context.Context, *authv1.CreateInvitationRequest) (*authv1.CreateInvitationResponse, error)
	createTenantInvitation func(context.Context, *authv1.CreateTenantInvitationRequest) (*authv1.CreateInvitationResponse, error)
	listInvitations        func(context.Context, *authv1.ListInvitationsRequest) (*authv1.ListInvitationsResponse, error)
	revokeInvitation       func(context.Context, *authv1.RevokeInvitationRequest) (*authv1.Invitation, error)
	acceptInvitation       func(context.Context, *authv1.AcceptInvitationRequest) (*authv1.AcceptInvitationResponse, error)
}

func (f *fakeInvitations) CreateInvitation(ctx context.Context, in *authv1.CreateInvitationRequest, _ ...grpc.CallOption) (*authv1.CreateInvitationResponse, error) {
	return f.createInvitation(ctx, in)
}

func (f *fakeInvitations) CreateTenantInvitation(ctx context.Context, in *authv1.CreateTenantInvitationRequest, _ ...grpc.CallOption) (*authv1.CreateInvitationResponse, error) {
	return f.createTenantInvitation(ctx, in)
}

func (f *fakeInvitations) ListInvitations(ctx context.Context, in *authv1.ListInvitationsRequest, _ ...grpc.CallOption) (*authv1.ListInvitationsResponse, error) {
	return f.listInvitations(ctx, in)
}

func (f *fakeInvitations) RevokeInvitation(ctx context.Context, in *authv1.RevokeInvitationRequest, _ ...grpc.CallOption) (*authv1.Invitation, error) {
	return f.revokeInvitation(ctx, in)
}

func (f *fakeInvitations) AcceptInvitation(ctx context.Context, in *authv1.AcceptInvitationRequest, _ ...grpc.CallOption) (*authv1.AcceptInvitationResponse, error) {
	return f.acceptInvitation(ctx, in)
}

var testInvitation = &authv1.Invitation{
	Id:         "0196f3a2-aaaa-7bbb-8ccc-000000000002",
	TenantId:   "0196f3a2-aaaa-7bbb-8ccc-0000000000aa",
	Email:      "boss@globex.example",
	Role:       authv1.Role_ROLE_ADMIN,
	State:      authv1.Invitation_STATE_PENDING,
	CreateTime: timestamppb.New(testNow),
	ExpireTime: timestamppb.New(testNow.Add(72 * time.Hour)),
}

const testInvitationToken = "cmi_0196f3a2aaaa7bbb8ccc000000000002_only-once"

func TestInvitationsCreate(t *testing.T) {
	t.Parallel()
	resp := &authv1.CreateInvitationResponse{Invitation: testInvitation, Secret: testInvitationToken}
	tests := []struct {
		name       string
		args       []string
		wantTenant string // "" when CreateInvitation should be called
		want       *authv1.Invitation
		wantReqID  string
	}{
		{
			name: "own tenant, default expiry",
			args: []string{"-email", "m@acme.example", "-role", "manager"},
			want: &authv1.Invitation{Email: "m@acme.example", Role: authv1.Role_ROLE_MANAGER},
		},
		{
			name:       "operator names the tenant",
			args:       []string{"-email", "boss@globex.example", "-role", "admin", "-tenant", testInvitation.TenantId, "-expires", "72h", "-request-id", "onboard-1"},
			wantTenant: testInvitation.TenantId,
			want:       &authv1.Invitation{Email: "boss@globex.example", Role: authv1.Role_ROLE_ADMIN, ExpireTime: timestamppb.New(testNow.Add(72 * time.Hour))},
			wantReqID:  "onboard-1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, output := range []string{"table", "json"} {
				var gotReqID string
				check := func(ctx context.Context, inv *authv1.Invitation, rid string) {
					if bearer(ctx) != "stored-token" {
						t.Errorf("call carried %q, want the stored token", bearer(ctx))
					}
					if !proto.Equal(inv, tt.want) {
						t.Errorf("invitation = %v, want %v", inv, tt.want)
					}
					gotReqID = rid
				}
				client := &fakeInvitations{
					createInvitation: func(ctx context.Context, req *authv1.CreateInvitationRequest) (*authv1.CreateInvitationResponse, error) {
						if tt.wantTenant != "" {
							t.Error("CreateInvitation called with -tenant")
						}
						check(ctx, req.GetInvitation(), req.GetRequestId())
						return resp, nil
					},
					createTenantInvitation: func(ctx context.Context, req *authv1.CreateTenantInvitationRequest) (*authv1.CreateInvitationResponse, error) {
						if req.GetTenantId() != tt.wantTenant {
							t.Errorf("tenant = %q, want %q", req.GetTenantId(), tt.wantTenant)
						}
						check(ctx, req.GetInvitation(), req.GetRequestId())
						return resp, nil
					},
				}
				c := newTestCLI(t, loggedIn(t, fresh), client)
				if code := c.run(t.Context(), append([]string{"-o", output, "invitations", "create"}, tt.args...)); code != 0 {
					t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
				}
				switch {
				case tt.wantReqID != "" && gotReqID != tt.wantReqID:
					t.Errorf("request_id = %q, want %q", gotReqID, tt.wantReqID)
				case tt.wantReqID == "" && !strings.HasPrefix(gotReqID, "cmesh-"):
					t.Errorf("generated request_id = %q", gotReqID)
				}
				if strings.Contains(c.stderr.String(), testInvitationToken) {
					t.Errorf("stderr shows the token:\n%s", c.stderr)
				}
				if output == "json" {
					var got authv1.CreateInvitationResponse
					if err := protojson.Unmarshal(c.stdout.Bytes(), &got); err != nil || !proto.Equal(&got, resp) {
						t.Errorf("json = %v (%v), want %v", &got, err, resp)
					}
					continue
				}
				want := "" +
					"ID                                    EMAIL                ROLE   STATE    EXPIRES               ACCEPTED  USER\n" +
					"0196f3a2-aaaa-7bbb-8ccc-000000000002  boss@globex.example  admin  pending  2026-11-25T12:00:00Z  -         -\n" +
					"\n" +
					"token (shown once): " + testInvitationToken + "\n" +
					"hand it to boss@globex.example privately; they join with: cmesh invitations accept -token <token> -name <name>\n"
				if c.stdout.String() != want {
					t.Errorf("stdout =\n%s\nwant\n%s", c.stdout, want)
				}
			}
		})
	}
}

func TestInvitationsCreateRetryHasNoToken(t *testing.T) {
	t.Parallel()
	client := &fakeInvitations{createInvitation: func(context.Context, *authv1.CreateInvitationRequest) (*authv1.CreateInvitationResponse, error) {
		return &authv1.CreateInvitationResponse{Invitation: testInvitation}, nil
	}}
	c := newTestCLI(t, loggedIn(t, fresh), client)
	if code := c.run(t.Context(), []string{"invitations", "create", "-email", "boss@globex.example", "-role", "admin", "-request-id", "r1"}); code != 0 {
		t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
	}
	if out := c.stdout.String(); strings.Contains(out, "token (shown once)") || !strings.Contains(out, "no token: this request was already done") {
		t.Errorf("stdout =\n%s", out)
	}
}

func TestInvitationsUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args       []string
		wantStderr string
	}{
		{[]string{"create", "-role", "admin"}, "-email is required"},
		{[]string{"create", "-email", "a@b.example"}, "-role is required"},
		{[]string{"create", "-email", "a@b.example", "-role", "platform_operator"}, `unknown role "platform_operator"`},
		{[]string{"create", "-email", "a@b.example", "-role", "viewer", "-expires", "-1h"}, "-expires must be positive"},
		{[]string{"create", "-email", "a@b.example", "-role", "viewer", "-request-id", "bad id"}, "-request-id"},
		{[]string{"revoke"}, "want ID"},
		{[]string{"accept"}, "-token is required"},
		{[]string{"accept", "-token", "cmi_x", "-password-stdin", "-password-file", "f"}, "exclusive"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			c := newTestCLI(t, loggedIn(t, fresh), nil)
			if code := c.run(t.Context(), append([]string{"invitations"}, tt.args...)); code != 2 {
				t.Fatalf("exit code = %d, want 2; stderr:\n%s", code, c.stderr)
			}
			if !strings.Contains(c.stderr.String(), tt.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantStderr, c.stderr)
			}
		})
	}
}

func TestInvitationsAccept(t *testing.T) {
	t.Parallel()
	const pw = "my own long password"
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		args  []string
		stdin string
	}{
		{name: "prompt reads a line of stdin", stdin: pw + "\n"},
		{name: "password file", args: []string{"-password-file", file}},
		{name: "password stdin", args: []string{"-password-stdin"}, stdin: pw},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := &fakeInvitations{acceptInvitation: func(ctx context.Context, req *authv1.AcceptInvitationRequest) (*authv1.AcceptInvitationResponse, error) {
				if got := bearer(ctx); got != "" {
					t.Errorf("accept carried a credential %q; it needs none", got)
				}
				want := &authv1.AcceptInvitationRequest{Token: testInvitationToken, DisplayName: "Boss", Password: pw}
				if !proto.Equal(req, want) {
					t.Errorf("request = %v, want %v", req, want)
				}
				return &authv1.AcceptInvitationResponse{TenantSlug: "globex", User: &authv1.User{
					Id: "u1", TenantId: testInvitation.TenantId, Email: "boss@globex.example", DisplayName: "Boss",
					Role: authv1.Role_ROLE_ADMIN, State: authv1.User_STATE_ACTIVE, CreateTime: timestamppb.New(testNow),
				}}, nil
			}}
			c := newTestCLI(t, nil, client) // not logged in
			c.stdin.Reset(tt.stdin)
			if code := c.run(t.Context(), append([]string{"invitations", "accept", "-token", testInvitationToken, "-name", "Boss"}, tt.args...)); code != 0 {
				t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
			}
			want := "" +
				"ID  EMAIL                NAME  ROLE   STATE   CREATED\n" +
				"u1  boss@globex.example  Boss  admin  active  2026-11-22T12:00:00Z\n" +
				"\n" +
				"welcome: log in with cmesh login -tenant globex -email boss@globex.example\n"
			if c.stdout.String() != want {
				t.Errorf("stdout =\n%s\nwant\n%s", c.stdout, want)
			}
			if strings.Contains(c.stdout.String()+c.stderr.String(), pw) {
				t.Error("the password was printed")
			}
		})
	}
}

func TestInvitationsListAndRevoke(t *testing.T) {
	t.Parallel()
	accepted := proto.CloneOf(testInvitation)
	accepted.Id, accepted.State, accepted.AcceptTime, accepted.UserId = "i2", authv1.Invitation_STATE_ACCEPTED, timestamppb.New(testNow.Add(time.Hour)), "u1"
	revoked := proto.CloneOf(testInvitation)
	revoked.State, revoked.RevokeTime = authv1.Invitation_STATE_REVOKED, timestamppb.New(testNow)
	client := &fakeInvitations{
		listInvitations: func(context.Context, *authv1.ListInvitationsRequest) (*authv1.ListInvitationsResponse, error) {
			return &authv1.ListInvitationsResponse{Invitations: []*authv1.Invitation{testInvitation, accepted}}, nil
		},
		revokeInvitation: func(_ context.Context, req *authv1.RevokeInvitationRequest) (*authv1.Invitation, error) {
			if req.GetId() != testInvitation.Id {
				t.Errorf("revoke %q", req.GetId())
			}
			return revoked, nil
		},
	}
	c := newTestCLI(t, loggedIn(t, fresh), client)
	if code := c.run(t.Context(), []string{"invitations", "list"}); code != 0 {
		t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
	}
	want := "" +
		"ID                                    EMAIL                ROLE   STATE     EXPIRES               ACCEPTED              USER\n" +
		"0196f3a2-aaaa-7bbb-8ccc-000000000002  boss@globex.example  admin  pending   2026-11-25T12:00:00Z  -                     -\n" +
		"i2                                    boss@globex.example  admin  accepted  2026-11-25T12:00:00Z  2026-11-22T13:00:00Z  u1\n"
	if c.stdout.String() != want {
		t.Errorf("list stdout =\n%s\nwant\n%s", c.stdout, want)
	}
	c = newTestCLI(t, loggedIn(t, fresh), client)
	if code := c.run(t.Context(), []string{"invitations", "revoke", testInvitation.Id}); code != 0 {
		t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
	}
	if !strings.Contains(c.stdout.String(), " revoked ") {
		t.Errorf("revoke stdout =\n%s", c.stdout)
	}
}
