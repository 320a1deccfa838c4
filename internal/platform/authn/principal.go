// Package authn turns the credential of a request into a Principal: who is calling, for which
// tenant, with which permissions. Access tokens are EdDSA JWTs verified locally against the
// auth service's published keys; the tenant always comes from the credential, never from the
// request body.
package authn

import (
	"context"
	"slices"

	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// Kind is the kind of credential a principal presented.
type Kind string

// Credential kinds.
const (
	KindAccessToken Kind = "access_token"
	KindAPIKey      Kind = "api_key"
)

// Principal is the authenticated end user (or API key) behind a request.
type Principal struct {
	// TenantID is empty only for platform operators.
	TenantID string
	// Subject is the user id (or API key id).
	Subject string
	Role    rbac.Role
	// Permissions the credential holds: the role's, or an API key's scopes.
	Permissions []string
	Kind        Kind
	// TokenID is the JWT id (jti) of an access token.
	TokenID string
	// UserEpoch and TenantEpoch are the token epochs the credential was issued (or, for an API
	// key, verified) under; a revocation raises them (see RevocationList).
	UserEpoch, TenantEpoch int64
}

// Has reports whether the principal holds permission.
func (p *Principal) Has(permission string) bool {
	return p != nil && slices.Contains(p.Permissions, permission)
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal of the request, or nil when the caller presented none.
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}
