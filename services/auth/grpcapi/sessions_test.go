package grpcapi_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

func TestRefreshTokensRotateAndReuseRevokesTheFamily(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "sessions")
	ctx := context.Background()
	first := e.loginFull(t, "sessions", "viewer@sessions.example", password)
	if first.GetRefreshToken() == "" || first.GetRefreshExpireTime() == nil {
		t.Fatalf("login gave no refresh token: %v", first)
	}
	second, err := e.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: first.GetRefreshToken()})
	if err != nil {
		t.Fatal(err)
	}
	if second.GetRefreshToken() == first.GetRefreshToken() || second.GetAccessToken() == "" {
		t.Fatalf("refresh did not rotate: %v", second)
	}
	who, err := e.client.WhoAmI(as(second.GetAccessToken()), &authv1.WhoAmIRequest{})
	if err != nil || who.GetSubject() != f.users[rbac.Viewer].ID {
		t.Fatalf("refreshed access token: %v %v", who, err)
	}
	// Replaying the first (used) token: refused, and the whole family dies with it.
	if _, err := e.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: first.GetRefreshToken()}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("reused refresh token: %v, want Unauthenticated", err)
	}
	if _, err := e.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: second.GetRefreshToken()}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("newest token of a revoked family: %v, want Unauthenticated", err)
	}
	// Another session of the same user is untouched.
	other := e.loginFull(t, "sessions", "viewer@sessions.example", password)
	if _, err := e.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: other.GetRefreshToken()}); err != nil {
		t.Fatalf("an unrelated session was revoked: %v", err)
	}
}

func TestSessionsEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "ends")
	ctx := context.Background()
	refreshFails := func(name, tok string) {
		t.Helper()
		if _, err := e.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: tok}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: refresh = %v, want Unauthenticated", name, err)
		}
	}

	s := e.loginFull(t, "ends", "viewer@ends.example", password)
	if _, err := e.client.Logout(ctx, &authv1.LogoutRequest{RefreshToken: s.GetRefreshToken()}); err != nil {
		t.Fatal(err)
	}
	refreshFails("after logout", s.GetRefreshToken())
	if _, err := e.client.Logout(ctx, &authv1.LogoutRequest{RefreshToken: "cmr_unknown"}); err != nil {
		t.Fatalf("logout of an unknown token must not say anything: %v", err)
	}

	a := e.loginFull(t, "ends", "analyst@ends.example", password)
	b := e.loginFull(t, "ends", "analyst@ends.example", password)
	resp, err := e.client.RevokeUserSessions(as(f.tokens[rbac.Admin]), &authv1.RevokeUserSessionsRequest{Id: f.users[rbac.Analyst].ID})
	if err != nil || resp.GetRevokedSessions() < 2 {
		t.Fatalf("RevokeUserSessions = %v, %v; want at least the 2 sessions", resp, err)
	}
	refreshFails("after revoke-all (a)", a.GetRefreshToken())
	refreshFails("after revoke-all (b)", b.GetRefreshToken())

	m := e.loginFull(t, "ends", "manager@ends.example", password)
	if _, err := e.client.ChangePassword(as(m.GetAccessToken()), &authv1.ChangePasswordRequest{CurrentPassword: "wrong password!", NewPassword: "a brand new password"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("change with a wrong current password: %v", err)
	}
	if _, err := e.client.ChangePassword(as(m.GetAccessToken()), &authv1.ChangePasswordRequest{CurrentPassword: password, NewPassword: "a brand new password"}); err != nil {
		t.Fatal(err)
	}
	refreshFails("after password change", m.GetRefreshToken())
	if _, err := e.client.Login(ctx, &authv1.LoginRequest{Tenant: "ends", Email: "manager@ends.example", Password: password}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("old password still works: %v", err)
	}
	e.login(t, "ends", "manager@ends.example", "a brand new password")

	d := e.loginFull(t, "ends", "viewer@ends.example", password)
	if _, err := e.client.DisableUser(as(f.tokens[rbac.Admin]), &authv1.DisableUserRequest{Id: f.users[rbac.Viewer].ID}); err != nil {
		t.Fatal(err)
	}
	refreshFails("after the user was disabled", d.GetRefreshToken())
}

// A refresh family ends a fixed time after its login, however faithfully it is rotated.
func TestRefreshFamiliesHaveAnAbsoluteLifetime(t *testing.T) {
	t.Parallel()
	var offset atomic.Int64
	e := newEnv(t, func(s *auth.Service) {
		s.WithClock(func() time.Time { return time.Now().Add(time.Duration(offset.Load())) })
	})
	e.tenantWithRoles(t, "family")
	ctx := context.Background()
	start := time.Now()
	first := e.loginFull(t, "family", "viewer@family.example", password)

	// Just before the end: still rotates, and says when the family ends.
	offset.Store(int64(auth.DefaultRefreshAbsoluteTTL - time.Hour))
	second, err := e.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: first.GetRefreshToken()})
	if err != nil {
		t.Fatalf("refresh within the family's lifetime: %v", err)
	}
	if end := start.Add(auth.DefaultRefreshAbsoluteTTL + time.Minute); second.GetRefreshExpireTime().AsTime().After(end) {
		t.Errorf("rotated token expires %v, after the family's end %v", second.GetRefreshExpireTime().AsTime(), end)
	}
	// Past the end: refused like an expired token.
	offset.Store(int64(auth.DefaultRefreshAbsoluteTTL + time.Hour))
	_, err = e.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: second.GetRefreshToken()})
	if st := status.Convert(err); st.Code() != codes.Unauthenticated || st.Message() != "invalid, expired or revoked refresh token" {
		t.Fatalf("refresh past the family's lifetime: %v, want the expired-token answer", err)
	}
}
