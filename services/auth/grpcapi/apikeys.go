package grpcapi

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

// CreateApiKey implements authv1.AuthServiceServer.
func (s *Server) CreateApiKey(ctx context.Context, req *authv1.CreateApiKeyRequest) (*authv1.CreateApiKeyResponse, error) {
	var expire *time.Time
	if req.GetExpireTime() != nil {
		t := req.GetExpireTime().AsTime()
		expire = &t
	}
	k, secret, err := s.svc.CreateAPIKey(ctx, authn.FromContext(ctx), req.GetName(), req.GetScopes(), expire)
	if err != nil {
		return nil, err
	}
	return &authv1.CreateApiKeyResponse{ApiKey: apiKeyToProto(k), Secret: secret}, nil
}

// GetApiKey implements authv1.AuthServiceServer.
func (s *Server) GetApiKey(ctx context.Context, req *authv1.GetApiKeyRequest) (*authv1.ApiKey, error) {
	k, err := s.svc.GetAPIKey(ctx, authn.FromContext(ctx), req.GetId())
	return apiKeyToProto(k), err
}

// ListApiKeys implements authv1.AuthServiceServer.
func (s *Server) ListApiKeys(ctx context.Context, req *authv1.ListApiKeysRequest) (*authv1.ListApiKeysResponse, error) {
	page, err := auth.ParsePage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	ks, next, err := s.svc.ListAPIKeys(ctx, authn.FromContext(ctx), page)
	if err != nil {
		return nil, err
	}
	resp := &authv1.ListApiKeysResponse{NextPageToken: next}
	for _, k := range ks {
		resp.ApiKeys = append(resp.ApiKeys, apiKeyToProto(k))
	}
	return resp, nil
}

// RevokeApiKey implements authv1.AuthServiceServer.
func (s *Server) RevokeApiKey(ctx context.Context, req *authv1.RevokeApiKeyRequest) (*authv1.ApiKey, error) {
	k, err := s.svc.RevokeAPIKey(ctx, authn.FromContext(ctx), req.GetId())
	return apiKeyToProto(k), err
}

// VerifyApiKey implements authv1.AuthServiceServer.
func (s *Server) VerifyApiKey(ctx context.Context, req *authv1.VerifyApiKeyRequest) (*authv1.VerifyApiKeyResponse, error) {
	k, err := s.svc.CheckAPIKey(ctx, req.GetSecret())
	if err != nil {
		return nil, err
	}
	return &authv1.VerifyApiKeyResponse{KeyId: k.ID, TenantId: k.TenantID, Scopes: k.Scopes, ExpireTime: optionalTime(k.ExpireTime),
		TenantTokenEpoch: k.TenantTokenEpoch}, nil
}

// ListRevocations implements authv1.AuthServiceServer.
func (s *Server) ListRevocations(ctx context.Context, _ *authv1.ListRevocationsRequest) (*authv1.ListRevocationsResponse, error) {
	rs, since, err := s.svc.ListRevocations(ctx)
	if err != nil {
		return nil, err
	}
	kinds := map[auth.RevocationKind]authv1.Revocation_Kind{
		auth.RevokedUser: authv1.Revocation_KIND_USER, auth.RevokedTenant: authv1.Revocation_KIND_TENANT, auth.RevokedAPIKey: authv1.Revocation_KIND_API_KEY,
	}
	resp := &authv1.ListRevocationsResponse{WindowStart: timestamppb.New(since)}
	for _, r := range rs {
		resp.Revocations = append(resp.Revocations, &authv1.Revocation{Kind: kinds[r.Kind], Id: r.ID, TokenEpoch: r.Epoch, RevokeTime: timestamppb.New(r.Time)})
	}
	return resp, nil
}

func apiKeyToProto(k auth.APIKey) *authv1.ApiKey {
	if k.ID == "" {
		return nil
	}
	return &authv1.ApiKey{
		Id: k.ID, TenantId: k.TenantID, Name: k.Name, Scopes: k.Scopes, SecretPrefix: k.SecretPrefix(), Creator: k.Creator,
		ExpireTime: optionalTime(k.ExpireTime), CreateTime: timestamppb.New(k.CreateTime),
		RevokeTime: optionalTime(k.RevokeTime), LastUsedTime: optionalTime(k.LastUsedTime),
	}
}

func optionalTime(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}
