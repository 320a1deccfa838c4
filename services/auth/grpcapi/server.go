// Package grpcapi serves the auth domain over gRPC (and, through the gateway, REST). Handlers
// are thin: decode, call the domain, encode.
package grpcapi

import (
	"context"
	"encoding/base64"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

// Server implements authv1.AuthServiceServer.
type Server struct {
	authv1.UnimplementedAuthServiceServer
	svc *auth.Service
}

var _ authv1.AuthServiceServer = (*Server)(nil)

// NewServer returns the gRPC server of svc.
func NewServer(svc *auth.Service) *Server { return &Server{svc: svc} }

// Login implements authv1.AuthServiceServer.
func (s *Server) Login(ctx context.Context, req *authv1.LoginRequest) (*authv1.LoginResponse, error) {
	tok, err := s.svc.Login(ctx, req.GetTenant(), req.GetEmail(), req.GetPassword(), telemetry.ClientAddress(ctx))
	return tokenToProto(tok), withRetryAfter(ctx, err)
}

func tokenToProto(tok auth.Token) *authv1.LoginResponse {
	if tok.AccessToken == "" {
		return nil
	}
	return &authv1.LoginResponse{
		AccessToken:       tok.AccessToken,
		TokenType:         "Bearer",
		ExpiresIn:         int64(tok.ExpireTime.Sub(timeNow()).Seconds()),
		ExpireTime:        timestamppb.New(tok.ExpireTime),
		RefreshToken:      tok.RefreshToken,
		RefreshExpireTime: timestamppb.New(tok.RefreshExpireTime),
	}
}

// WhoAmI implements authv1.AuthServiceServer.
func (s *Server) WhoAmI(ctx context.Context, _ *authv1.WhoAmIRequest) (*authv1.WhoAmIResponse, error) {
	p := authn.FromContext(ctx)
	peer, _ := mtls.PeerService(ctx)
	return &authv1.WhoAmIResponse{
		TenantId:       p.TenantID,
		Subject:        p.Subject,
		Role:           roleToProto(p.Role),
		Permissions:    p.Permissions,
		CredentialKind: string(p.Kind),
		PeerService:    peer,
	}, nil
}

// ListSigningKeys implements authv1.AuthServiceServer.
func (s *Server) ListSigningKeys(ctx context.Context, _ *authv1.ListSigningKeysRequest) (*authv1.ListSigningKeysResponse, error) {
	keys, err := s.svc.PublishedKeys(ctx)
	if err != nil {
		return nil, err
	}
	resp := &authv1.ListSigningKeysResponse{}
	for _, k := range keys {
		resp.Keys = append(resp.Keys, keyToProto(k))
	}
	return resp, nil
}

// RotateSigningKey implements authv1.AuthServiceServer.
func (s *Server) RotateSigningKey(ctx context.Context, _ *authv1.RotateSigningKeyRequest) (*authv1.SigningKey, error) {
	k, err := s.svc.RotateSigningKey(ctx)
	if err != nil {
		return nil, err
	}
	return keyToProto(k), nil
}

// CreateTenant implements authv1.AuthServiceServer.
func (s *Server) CreateTenant(ctx context.Context, req *authv1.CreateTenantRequest) (*authv1.Tenant, error) {
	t, err := s.svc.CreateTenant(ctx, req.GetTenant().GetSlug(), req.GetTenant().GetDisplayName())
	return tenantToProto(t), err
}

// GetTenant implements authv1.AuthServiceServer.
func (s *Server) GetTenant(ctx context.Context, req *authv1.GetTenantRequest) (*authv1.Tenant, error) {
	t, err := s.svc.GetTenant(ctx, req.GetId())
	return tenantToProto(t), err
}

// ListTenants implements authv1.AuthServiceServer.
func (s *Server) ListTenants(ctx context.Context, req *authv1.ListTenantsRequest) (*authv1.ListTenantsResponse, error) {
	page, err := auth.ParsePage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	ts, next, err := s.svc.ListTenants(ctx, page)
	if err != nil {
		return nil, err
	}
	resp := &authv1.ListTenantsResponse{NextPageToken: next}
	for _, t := range ts {
		resp.Tenants = append(resp.Tenants, tenantToProto(t))
	}
	return resp, nil
}

// SuspendTenant implements authv1.AuthServiceServer.
func (s *Server) SuspendTenant(ctx context.Context, req *authv1.SuspendTenantRequest) (*authv1.Tenant, error) {
	t, err := s.svc.SuspendTenant(ctx, req.GetId())
	return tenantToProto(t), err
}

// SuspendTenantForBilling implements authv1.AuthServiceServer.
func (s *Server) SuspendTenantForBilling(ctx context.Context, req *authv1.SuspendTenantForBillingRequest) (*authv1.Tenant, error) {
	t, err := s.svc.SuspendTenantForBilling(ctx, req.GetTenantId(), req.GetReason())
	return tenantToProto(t), err
}

// CreateUser implements authv1.AuthServiceServer.
func (s *Server) CreateUser(ctx context.Context, req *authv1.CreateUserRequest) (*authv1.User, error) {
	in := req.GetUser()
	u, err := s.svc.CreateUser(ctx, authn.FromContext(ctx), auth.User{
		Email: in.GetEmail(), DisplayName: in.GetDisplayName(), Role: roleFromProto(in.GetRole()),
	}, req.GetPassword())
	return userToProto(u), err
}

// GetUser implements authv1.AuthServiceServer.
func (s *Server) GetUser(ctx context.Context, req *authv1.GetUserRequest) (*authv1.User, error) {
	u, err := s.svc.GetUser(ctx, authn.FromContext(ctx), req.GetId())
	return userToProto(u), err
}

// ListUsers implements authv1.AuthServiceServer.
func (s *Server) ListUsers(ctx context.Context, req *authv1.ListUsersRequest) (*authv1.ListUsersResponse, error) {
	page, err := auth.ParsePage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	us, next, err := s.svc.ListUsers(ctx, authn.FromContext(ctx), page)
	if err != nil {
		return nil, err
	}
	resp := &authv1.ListUsersResponse{NextPageToken: next}
	for _, u := range us {
		resp.Users = append(resp.Users, userToProto(u))
	}
	return resp, nil
}

// DisableUser implements authv1.AuthServiceServer.
func (s *Server) DisableUser(ctx context.Context, req *authv1.DisableUserRequest) (*authv1.User, error) {
	u, err := s.svc.DisableUser(ctx, authn.FromContext(ctx), req.GetId())
	return userToProto(u), err
}

// ChangeUserRole implements authv1.AuthServiceServer.
func (s *Server) ChangeUserRole(ctx context.Context, req *authv1.ChangeUserRoleRequest) (*authv1.User, error) {
	u, err := s.svc.ChangeUserRole(ctx, authn.FromContext(ctx), req.GetId(), roleFromProto(req.GetRole()))
	return userToProto(u), err
}

func tenantToProto(t auth.Tenant) *authv1.Tenant {
	if t.ID == "" {
		return nil
	}
	state := authv1.Tenant_STATE_ACTIVE
	if t.State == auth.TenantSuspended {
		state = authv1.Tenant_STATE_SUSPENDED
	}
	return &authv1.Tenant{Id: t.ID, Slug: t.Slug, DisplayName: t.DisplayName, State: state,
		CreateTime: timestamppb.New(t.CreateTime), UpdateTime: timestamppb.New(t.UpdateTime)}
}

func userToProto(u auth.User) *authv1.User {
	if u.ID == "" {
		return nil
	}
	state := authv1.User_STATE_ACTIVE
	if u.State == auth.UserDisabled {
		state = authv1.User_STATE_DISABLED
	}
	return &authv1.User{Id: u.ID, TenantId: u.TenantID, Email: u.Email, DisplayName: u.DisplayName,
		Role: roleToProto(u.Role), State: state,
		CreateTime: timestamppb.New(u.CreateTime), UpdateTime: timestamppb.New(u.UpdateTime)}
}

func keyToProto(k auth.PublicKey) *authv1.SigningKey {
	return &authv1.SigningKey{Kid: k.KID, Kty: "OKP", Crv: "Ed25519", Alg: "EdDSA",
		X: base64.RawURLEncoding.EncodeToString(k.Key), Active: k.Active, CreateTime: timestamppb.New(k.CreateTime)}
}

// roleToProto maps "platform_operator" to ROLE_PLATFORM_OPERATOR and so on.
func roleToProto(r rbac.Role) authv1.Role {
	return authv1.Role(authv1.Role_value["ROLE_"+strings.ToUpper(string(r))])
}

// roleFromProto is the inverse of roleToProto; ROLE_UNSPECIFIED and unknown values give an
// invalid role that validation rejects.
func roleFromProto(r authv1.Role) rbac.Role {
	if r == authv1.Role_ROLE_UNSPECIFIED {
		return ""
	}
	return rbac.Role(strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_")))
}
