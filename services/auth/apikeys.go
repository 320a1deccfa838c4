package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// APIKey is a tenant's credential for servers and ingestion.
type APIKey struct {
	ID           string
	TenantID     string
	Name         string
	Scopes       []string
	Creator      string
	ExpireTime   *time.Time
	CreateTime   time.Time
	RevokeTime   *time.Time
	LastUsedTime *time.Time
	// TenantTokenEpoch is the tenant's token epoch at verification (set by APIKeyForVerify only).
	TenantTokenEpoch int64
}

// SecretPrefix is the recognisable, non-secret start of the key's secret.
func (k APIKey) SecretPrefix() string {
	return authn.APIKeyPrefix + strings.ReplaceAll(k.ID, "-", "")[:8]
}

// Limits of API keys.
const (
	MaxAPIKeyNameLen  = 100
	MaxAPIKeyLifetime = 10 * 365 * 24 * time.Hour
	// apiKeyTouchInterval bounds how often last-used time is written (one write per key per minute).
	apiKeyTouchInterval = time.Minute
)

// CreateAPIKey creates a key in the caller's tenant whose scopes are a subset of the caller's
// own permissions, and returns it with its secret — the only time the secret exists in clear.
func (s *Service) CreateAPIKey(ctx context.Context, caller *authn.Principal, name string, scopes []string, expire *time.Time) (APIKey, string, error) {
	var v apperr.Violations
	if strings.TrimSpace(name) == "" || !utf8.ValidString(name) || utf8.RuneCountInString(name) > MaxAPIKeyNameLen {
		v.Add("name", "must be 1 to %d characters", MaxAPIKeyNameLen)
	}
	if len(scopes) == 0 {
		v.Add("scopes", "must name at least one permission")
	}
	known := rbac.AllPermissions()
	for i, sc := range scopes {
		switch {
		case !slices.Contains(known, sc):
			v.Add(fmt.Sprintf("scopes[%d]", i), "%q is not a permission", sc)
		case !caller.Has(sc):
			v.Add(fmt.Sprintf("scopes[%d]", i), "%q is not one of your own permissions", sc)
		}
	}
	now := s.now()
	if expire != nil && (!expire.After(now) || expire.Sub(now) > MaxAPIKeyLifetime) {
		v.Add("expire_time", "must be in the future and within 10 years")
	}
	if caller.TenantID == "" {
		v.Add("tenant", "API keys belong to a tenant; platform operators have none")
	}
	if err := v.Err(); err != nil {
		return APIKey{}, "", err
	}
	id := newUUID()
	secret := authn.APIKeyPrefix + strings.ReplaceAll(id, "-", "") + "_" + randomToken(32)
	sorted := slices.Clone(scopes)
	slices.Sort(sorted)
	k, err := s.store.CreateAPIKey(ctx, APIKey{
		ID: id, TenantID: caller.TenantID, Name: name, Scopes: slices.Compact(sorted), Creator: caller.Subject, ExpireTime: expire,
	}, hashSecret(secret), takeAudit(ctx, caller.TenantID, "", id))
	if err != nil {
		return APIKey{}, "", err
	}
	return k, secret, nil
}

// GetAPIKey returns a key of the caller's tenant.
func (s *Service) GetAPIKey(ctx context.Context, caller *authn.Principal, id string) (APIKey, error) {
	if err := ValidateID("id", id); err != nil {
		return APIKey{}, err
	}
	return s.store.GetAPIKey(ctx, caller.TenantID, id)
}

// ListAPIKeys returns one page of the caller's tenant's keys and the next page's token.
func (s *Service) ListAPIKeys(ctx context.Context, caller *authn.Principal, p Page) ([]APIKey, string, error) {
	ks, err := s.store.ListAPIKeys(ctx, caller.TenantID, p)
	if err != nil || len(ks) == 0 {
		return ks, "", err
	}
	last := ks[len(ks)-1]
	return ks, NextPageToken(p, len(ks), Cursor{CreateTime: last.CreateTime, ID: last.ID}), nil
}

// RevokeAPIKey revokes a key of the caller's tenant; revoking twice keeps the first time.
func (s *Service) RevokeAPIKey(ctx context.Context, caller *authn.Principal, id string) (APIKey, error) {
	if err := ValidateID("id", id); err != nil {
		return APIKey{}, err
	}
	return s.store.RevokeAPIKey(ctx, caller.TenantID, id, takeAudit(ctx, caller.TenantID, "", id))
}

var errBadAPIKey = apperr.New(apperr.Unauthenticated, "INVALID_API_KEY", "invalid, revoked or expired API key")

// VerifyAPIKey checks a presented secret: well-formed, known, matching, not revoked, not
// expired, and of an active tenant. It implements authn.APIKeyVerifier for auth itself.
func (s *Service) VerifyAPIKey(ctx context.Context, secret string) (*authn.Principal, error) {
	k, err := s.CheckAPIKey(ctx, secret)
	if err != nil {
		return nil, err
	}
	return &authn.Principal{TenantID: k.TenantID, Subject: k.ID, Permissions: k.Scopes, Kind: authn.KindAPIKey, TenantEpoch: k.TenantTokenEpoch}, nil
}

// CheckAPIKey is VerifyAPIKey returning the key itself (for the VerifyApiKey RPC).
func (s *Service) CheckAPIKey(ctx context.Context, secret string) (APIKey, error) {
	id, ok := parseAPIKeyID(secret)
	if !ok {
		return APIKey{}, errBadAPIKey
	}
	k, hash, tenantState, err := s.store.APIKeyForVerify(ctx, id)
	if apperr.HasCode(err, apperr.NotFound) {
		return APIKey{}, errBadAPIKey
	}
	if err != nil {
		return APIKey{}, err
	}
	now := s.now()
	if subtle.ConstantTimeCompare(hash, hashSecret(secret)) != 1 || k.RevokeTime != nil ||
		(k.ExpireTime != nil && !k.ExpireTime.After(now)) || tenantState != TenantActive {
		return APIKey{}, errBadAPIKey
	}
	if k.LastUsedTime == nil || now.Sub(*k.LastUsedTime) > apiKeyTouchInterval {
		if err := s.store.TouchAPIKey(ctx, k.ID, apiKeyTouchInterval); err != nil {
			return APIKey{}, err
		}
	}
	return k, nil
}

// parseAPIKeyID extracts the key id from cmk_<32 hex>_<secret>.
func parseAPIKeyID(secret string) (string, bool) {
	rest, ok := strings.CutPrefix(secret, authn.APIKeyPrefix)
	if !ok || len(secret) > 128 {
		return "", false
	}
	idHex, tail, ok := strings.Cut(rest, "_")
	if !ok || len(idHex) != 32 || tail == "" {
		return "", false
	}
	if _, err := hex.DecodeString(idHex); err != nil {
		return "", false
	}
	return idHex[0:8] + "-" + idHex[8:12] + "-" + idHex[12:16] + "-" + idHex[16:20] + "-" + idHex[20:32], true
}

func hashSecret(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// randomToken returns n random bytes, base64url without padding.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("read random: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("read random: %v", err))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
