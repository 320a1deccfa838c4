// Package authclient implements authn.Auth over the auth service's gRPC API (mTLS).
package authclient

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
)

// Client asks the auth service.
type Client struct{ c authv1.AuthServiceClient }

var _ authn.Auth = Client{}

// New returns the port over c.
func New(c authv1.AuthServiceClient) Client { return Client{c: c} }

// NewVerifier is authn.NewRemoteVerifier over c: the verifier of a service other than auth.
// The caller runs the returned list (RevocationList.Run) for as long as it serves.
func NewVerifier(c authv1.AuthServiceClient) (authn.Verifier, *authn.RevocationList) {
	return authn.NewRemoteVerifier(New(c))
}

// SigningKeys implements authn.Auth. Keys that are not well-formed EdDSA keys are left out.
func (c Client) SigningKeys(ctx context.Context) (map[string]ed25519.PublicKey, error) {
	resp, err := c.c.ListSigningKeys(ctx, &authv1.ListSigningKeysRequest{})
	if err != nil {
		return nil, err
	}
	keys := make(map[string]ed25519.PublicKey, len(resp.GetKeys()))
	for _, k := range resp.GetKeys() {
		raw, err := base64.RawURLEncoding.DecodeString(k.GetX())
		if err != nil || len(raw) != ed25519.PublicKeySize || k.GetAlg() != "EdDSA" {
			continue
		}
		keys[k.GetKid()] = ed25519.PublicKey(raw)
	}
	return keys, nil
}

// VerifyAPIKey implements authn.Auth.
func (c Client) VerifyAPIKey(ctx context.Context, secret string) (authn.APIKey, error) {
	resp, err := c.c.VerifyApiKey(ctx, &authv1.VerifyApiKeyRequest{Secret: secret})
	if err != nil {
		return authn.APIKey{}, err
	}
	k := authn.APIKey{TenantID: resp.GetTenantId(), KeyID: resp.GetKeyId(), Scopes: resp.GetScopes(), TenantEpoch: resp.GetTenantTokenEpoch()}
	if exp := resp.GetExpireTime(); exp != nil {
		k.Expire = exp.AsTime()
	}
	return k, nil
}

// Revocations implements authn.Auth.
func (c Client) Revocations(ctx context.Context) (authn.Revoked, error) {
	resp, err := c.c.ListRevocations(ctx, &authv1.ListRevocationsRequest{})
	if err != nil {
		return authn.Revoked{}, fmt.Errorf("list revocations: %w", err)
	}
	r := authn.Revoked{Users: map[string]int64{}, Tenants: map[string]int64{}, APIKeys: map[string]bool{}}
	for _, rev := range resp.GetRevocations() {
		switch rev.GetKind() {
		case authv1.Revocation_KIND_USER:
			r.Users[rev.GetId()] = max(r.Users[rev.GetId()], rev.GetTokenEpoch())
		case authv1.Revocation_KIND_TENANT:
			r.Tenants[rev.GetId()] = max(r.Tenants[rev.GetId()], rev.GetTokenEpoch())
		case authv1.Revocation_KIND_API_KEY:
			r.APIKeys[rev.GetId()] = true
		}
	}
	return r, nil
}
