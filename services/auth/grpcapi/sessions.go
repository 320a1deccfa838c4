package grpcapi

import (
	"context"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// Refresh implements authv1.AuthServiceServer.
func (s *Server) Refresh(ctx context.Context, req *authv1.RefreshRequest) (*authv1.LoginResponse, error) {
	tok, err := s.svc.Refresh(ctx, req.GetRefreshToken())
	return tokenToProto(tok), err
}

// Logout implements authv1.AuthServiceServer.
func (s *Server) Logout(ctx context.Context, req *authv1.LogoutRequest) (*authv1.LogoutResponse, error) {
	return &authv1.LogoutResponse{}, s.svc.Logout(ctx, req.GetRefreshToken())
}

// ChangePassword implements authv1.AuthServiceServer.
func (s *Server) ChangePassword(ctx context.Context, req *authv1.ChangePasswordRequest) (*authv1.ChangePasswordResponse, error) {
	err := s.svc.ChangePassword(ctx, authn.FromContext(ctx), req.GetCurrentPassword(), req.GetNewPassword(), telemetry.ClientAddress(ctx))
	return &authv1.ChangePasswordResponse{}, withRetryAfter(ctx, err)
}

// RevokeUserSessions implements authv1.AuthServiceServer.
func (s *Server) RevokeUserSessions(ctx context.Context, req *authv1.RevokeUserSessionsRequest) (*authv1.RevokeUserSessionsResponse, error) {
	n, err := s.svc.RevokeUserSessions(ctx, authn.FromContext(ctx), req.GetId())
	if err != nil {
		return nil, err
	}
	return &authv1.RevokeUserSessionsResponse{RevokedSessions: n}, nil
}

// UnlockUser implements authv1.AuthServiceServer.
func (s *Server) UnlockUser(ctx context.Context, req *authv1.UnlockUserRequest) (*authv1.User, error) {
	u, err := s.svc.UnlockUser(ctx, authn.FromContext(ctx), req.GetId())
	return userToProto(u), err
}

// ListRoles implements authv1.AuthServiceServer.
func (s *Server) ListRoles(context.Context, *authv1.ListRolesRequest) (*authv1.ListRolesResponse, error) {
	resp := &authv1.ListRolesResponse{}
	for _, r := range rbac.Roles() {
		resp.Roles = append(resp.Roles, &authv1.RoleInfo{Role: roleToProto(r), Permissions: r.Permissions()})
	}
	return resp, nil
}
