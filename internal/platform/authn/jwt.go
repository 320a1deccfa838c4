package authn

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// Token claims every CampaignMesh access token carries.
const (
	Issuer   = "campaignmesh-auth"
	Audience = "campaignmesh"
	// leeway tolerates small clock differences between the mesh's processes.
	leeway = 5 * time.Second
)

// Claims are the claims of an access token.
type Claims struct {
	jwt.RegisteredClaims
	// TenantID is the tenant; empty for platform operators.
	TenantID string `json:"tid,omitempty"`
	Role     string `json:"role"`
	// UserEpoch and TenantEpoch are the token epochs of the user and tenant at issue.
	UserEpoch   int64 `json:"uep,omitempty"`
	TenantEpoch int64 `json:"tep,omitempty"`
}

// KeySource resolves a key id to an Ed25519 public key.
type KeySource interface {
	// PublicKey returns the key with id kid. An unknown kid is an error.
	PublicKey(ctx context.Context, kid string) (ed25519.PublicKey, error)
}

// ErrUnknownKey is returned by a KeySource for a kid it does not know.
var ErrUnknownKey = errors.New("unknown signing key")

// JWTVerifier verifies access tokens strictly: EdDSA only, a known kid, our issuer and audience,
// and an expiry are all required.
type JWTVerifier struct {
	keys   KeySource
	parser *jwt.Parser

	// A verified token is immutable until it expires: its principal is kept so a client sending
	// the same token on every call is verified once.
	cache principalCache
}

// NewJWTVerifier returns a verifier using keys.
func NewJWTVerifier(keys KeySource) *JWTVerifier {
	return &JWTVerifier{
		keys: keys,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
			jwt.WithIssuer(Issuer),
			jwt.WithAudience(Audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(leeway),
		),
	}
}

// Verify checks token and returns its principal. Errors describe the failure for logs; callers
// must only ever see a generic UNAUTHENTICATED.
func (v *JWTVerifier) Verify(ctx context.Context, token string) (*Principal, error) {
	key, now := credentialKey(token), time.Now()
	if p, ok := v.cache.get(key, now); ok {
		return p, nil
	}
	p, exp, err := v.verify(ctx, token)
	if err != nil {
		return nil, err
	}
	v.cache.put(key, *p, exp.Add(-leeway), now)
	return p, nil
}

func (v *JWTVerifier) verify(ctx context.Context, token string) (*Principal, time.Time, error) {
	var claims Claims
	_, err := v.parser.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errors.New("token has no kid")
		}
		return v.keys.PublicKey(ctx, kid)
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("verify access token: %w", err)
	}
	role := rbac.Role(claims.Role)
	if !role.Valid() {
		return nil, time.Time{}, fmt.Errorf("verify access token: unknown role %q", claims.Role)
	}
	if claims.Subject == "" || (role.TenantScoped() && claims.TenantID == "") || (!role.TenantScoped() && claims.TenantID != "") {
		return nil, time.Time{}, errors.New("verify access token: subject or tenant does not fit the role")
	}
	return &Principal{
		TenantID:    claims.TenantID,
		Subject:     claims.Subject,
		Role:        role,
		Permissions: role.Permissions(),
		Kind:        KindAccessToken,
		TokenID:     claims.ID,
		UserEpoch:   claims.UserEpoch,
		TenantEpoch: claims.TenantEpoch,
	}, claims.ExpiresAt.Time, nil
}

// Sign signs claims with an Ed25519 key, setting the kid header. Only the auth service holds
// private keys; tests use it to mint tokens.
func Sign(claims Claims, kid string, key ed25519.PrivateKey) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	t.Header["kid"] = kid
	s, err := t.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("sign access token: %w", err)
	}
	return s, nil
}

// StaticKeys is a KeySource over a fixed set of keys (tests and benchmarks).
type StaticKeys map[string]ed25519.PublicKey

// PublicKey implements KeySource.
func (s StaticKeys) PublicKey(_ context.Context, kid string) (ed25519.PublicKey, error) {
	if k, ok := s[kid]; ok {
		return k, nil
	}
	return nil, ErrUnknownKey
}
