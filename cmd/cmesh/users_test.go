package main

import (
	"context"
	"testing"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

func TestParseRole(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    authv1.Role
		wantErr bool
	}{
		{in: "admin", want: authv1.Role_ROLE_ADMIN},
		{in: "manager", want: authv1.Role_ROLE_MANAGER},
		{in: "analyst", want: authv1.Role_ROLE_ANALYST},
		{in: "viewer", want: authv1.Role_ROLE_VIEWER},
		{in: "Admin", want: authv1.Role_ROLE_ADMIN},
		{in: "privacy_officer", want: authv1.Role_ROLE_PRIVACY_OFFICER},
		{in: "Privacy_Officer", want: authv1.Role_ROLE_PRIVACY_OFFICER},
		{in: "", wantErr: true},
		{in: "owner", wantErr: true},
		{in: "ROLE_ADMIN", wantErr: true},
		{in: "platform_operator", wantErr: true}, // never given to a tenant user
		{in: "unspecified", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := parseRole(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseRole(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseRole(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// Every tenant role of the role table can be given from the command line, under its own name.
func TestRolesCoverEveryTenantRole(t *testing.T) {
	t.Parallel()
	for _, r := range rbac.Roles() {
		_, ok := roles[string(r)]
		if ok != r.TenantScoped() {
			t.Errorf("role %s: in cmesh's roles = %v, tenant role = %v", r, ok, r.TenantScoped())
		}
	}
	if len(roles) != len(rbac.Roles())-1 {
		t.Errorf("cmesh knows %d roles, the role table has %d tenant roles", len(roles), len(rbac.Roles())-1)
	}
}

func TestRoleNameRoundTrip(t *testing.T) {
	t.Parallel()
	for name, role := range roles {
		if got := roleName(role); got != name {
			t.Errorf("roleName(%v) = %q, want %q", role, got, name)
		}
	}
	if got := roleName(authv1.Role_ROLE_PLATFORM_OPERATOR); got != "platform_operator" {
		t.Errorf("roleName(ROLE_PLATFORM_OPERATOR) = %q", got)
	}
}

func TestRevokeSessions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		n    int64
		want string
	}{
		{0, "ended 0 sessions\n"},
		{1, "ended 1 session\n"},
		{3, "ended 3 sessions\n"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			client := &fakeAuth{revokeUserSessions: func(_ context.Context, req *authv1.RevokeUserSessionsRequest) (*authv1.RevokeUserSessionsResponse, error) {
				if req.GetId() != "u1" {
					t.Errorf("id = %q, want u1", req.GetId())
				}
				return &authv1.RevokeUserSessionsResponse{RevokedSessions: tt.n}, nil
			}}
			c := newTestCLI(t, loggedIn(t, fresh), client)
			if code := c.run(t.Context(), []string{"users", "revoke-sessions", "u1"}); code != 0 {
				t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
			}
			if c.stdout.String() != tt.want {
				t.Errorf("stdout = %q, want %q", c.stdout, tt.want)
			}
		})
	}
}

func TestRoles(t *testing.T) {
	t.Parallel()
	client := &fakeAuth{listRoles: func(context.Context, *authv1.ListRolesRequest) (*authv1.ListRolesResponse, error) {
		return &authv1.ListRolesResponse{Roles: []*authv1.RoleInfo{
			{Role: authv1.Role_ROLE_ADMIN, Permissions: []string{"apikeys.manage", "users.manage"}},
			{Role: authv1.Role_ROLE_VIEWER, Permissions: []string{"campaigns.read"}},
			{Role: authv1.Role_ROLE_PLATFORM_OPERATOR, Permissions: []string{"tenants.manage"}},
		}}, nil
	}}
	c := newTestCLI(t, loggedIn(t, fresh), client)
	if code := c.run(t.Context(), []string{"roles"}); code != 0 {
		t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
	}
	want := "" +
		"ROLE               PERMISSIONS\n" +
		"admin              apikeys.manage,users.manage\n" +
		"viewer             campaigns.read\n" +
		"platform_operator  tenants.manage\n"
	if c.stdout.String() != want {
		t.Errorf("stdout =\n%s\nwant\n%s", c.stdout, want)
	}
}
