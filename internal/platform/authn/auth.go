package authn

import (
	"context"
	"crypto/ed25519"
	"time"
)

// Auth is what services other than auth ask the auth service to verify credentials: its
// published signing keys, an API key, and the revocations since credentials were issued. It
// is a port so that this package (which domains import for Principal) depends on no generated
// API; authn/authclient implements it over gRPC.
type Auth interface {
	// SigningKeys returns the public keys access tokens are signed with, by key id.
	SigningKeys(ctx context.Context) (map[string]ed25519.PublicKey, error)
	// VerifyAPIKey checks an API key secret and returns what it grants.
	VerifyAPIKey(ctx context.Context, secret string) (APIKey, error)
	// Revocations returns what was revoked (see Revoked).
	Revocations(ctx context.Context) (Revoked, error)
}

// APIKey is what a verified API key grants.
type APIKey struct {
	TenantID, KeyID string
	Scopes          []string
	// Expire is when the key stops working (zero: never).
	Expire      time.Time
	TenantEpoch int64
}
