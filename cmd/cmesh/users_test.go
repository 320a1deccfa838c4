package main

import (
	"testing"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
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
