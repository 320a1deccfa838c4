package authn

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// APIKeyPrefix starts every API key secret, so keys are recognisable in logs and by secret
// scanners: cmk_<key id, 32 hex>_<secret, 43 base64url>.
const APIKeyPrefix = "cmk_"

// APIKeyVerifier checks an API key secret.
type APIKeyVerifier interface {
	VerifyAPIKey(ctx context.Context, secret string) (*Principal, error)
}

// RevocationChecker refuses a verified principal whose credential was revoked since it was
// issued (or since its verification was cached).
type RevocationChecker interface {
	CheckRevoked(ctx context.Context, p *Principal) error
}

// Verifier checks any bearer credential: API keys (by prefix) with Keys, everything else as an
// access token with Tokens, then asks Revocations (when set) whether it still counts. A nil Keys
// refuses API keys.
type Verifier struct {
	Tokens      *JWTVerifier
	Keys        APIKeyVerifier
	Revocations RevocationChecker
}

// NewRemoteVerifier is the verifier of a service other than auth: access tokens checked
// locally with auth's published keys, API keys through auth, both with the default caches, and
// revocations heard from auth's ListRevocations. The caller runs the returned list
// (RevocationList.Run) for as long as it serves.
func NewRemoteVerifier(auth Auth) (Verifier, *RevocationList) {
	revs := NewRemoteRevocations(auth, 0)
	return Verifier{Tokens: NewJWTVerifier(NewRemoteKeys(auth, 0, 0)), Keys: NewRemoteAPIKeys(auth, 0), Revocations: revs}, revs
}

// Verify implements grpcserver.Verifier.
func (v Verifier) Verify(ctx context.Context, credential string) (*Principal, error) {
	var p *Principal
	var err error
	switch {
	case !strings.HasPrefix(credential, APIKeyPrefix):
		p, err = v.Tokens.Verify(ctx, credential)
	case v.Keys == nil:
		return nil, errors.New("api keys are not accepted here")
	default:
		p, err = v.Keys.VerifyAPIKey(ctx, credential)
	}
	if err != nil || v.Revocations == nil {
		return p, err
	}
	if err := v.Revocations.CheckRevoked(ctx, p); err != nil {
		return nil, fmt.Errorf("verify credential: %w", err)
	}
	return p, nil
}

// RemoteAPIKeysTTL bounds how long a verified key is trusted without asking auth again. A
// revoked key is refused sooner, as soon as the RevocationList hears of it.
const RemoteAPIKeysTTL = 30 * time.Second

// RemoteAPIKeys verifies API keys through the auth service over mTLS and caches valid answers
// for RemoteAPIKeysTTL (never past the key's expiry). Secrets are cached by SHA-256 only.
type RemoteAPIKeys struct {
	auth  Auth
	ttl   time.Duration
	cache principalCache
}

// NewRemoteAPIKeys returns a verifier backed by the auth service; ttl <= 0 means RemoteAPIKeysTTL.
func NewRemoteAPIKeys(auth Auth, ttl time.Duration) *RemoteAPIKeys {
	if ttl <= 0 {
		ttl = RemoteAPIKeysTTL
	}
	return &RemoteAPIKeys{auth: auth, ttl: ttl}
}

// VerifyAPIKey implements APIKeyVerifier.
func (r *RemoteAPIKeys) VerifyAPIKey(ctx context.Context, secret string) (*Principal, error) {
	key, now := credentialKey(secret), time.Now()
	if p, ok := r.cache.get(key, now); ok {
		return p, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	k, err := r.auth.VerifyAPIKey(ctx, secret)
	if err != nil {
		return nil, fmt.Errorf("verify api key: %w", err)
	}
	p := Principal{TenantID: k.TenantID, Subject: k.KeyID, Permissions: k.Scopes, Kind: KindAPIKey, TenantEpoch: k.TenantEpoch}
	until := now.Add(r.ttl)
	if !k.Expire.IsZero() && k.Expire.Before(until) {
		until = k.Expire
	}
	r.cache.put(key, p, until, now)
	return &p, nil
}
