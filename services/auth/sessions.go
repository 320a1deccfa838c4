package auth

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
)

// Refresh tokens: opaque, single use, rotating. A login starts a family; every refresh marks
// the presented token used and issues the next one in the family. Presenting a used token
// again means it was stolen (or replayed): the whole family is revoked.
//
// A family also has an absolute lifetime from the login that started it
// (DefaultRefreshAbsoluteTTL): otherwise a stolen refresh token, rotated faithfully, would keep
// a session alive forever.
const (
	RefreshTokenPrefix        = "cmr_"
	DefaultRefreshTTL         = 14 * 24 * time.Hour
	DefaultRefreshAbsoluteTTL = 30 * 24 * time.Hour
)

// RefreshToken is a stored refresh token (only its hash is stored).
type RefreshToken struct {
	Hash       []byte
	FamilyID   string
	UserID     string
	ExpireTime time.Time
	// FamilyStartTime is the time of the login that started the family.
	FamilyStartTime time.Time
}

// Errors the store returns when rotating a refresh token.
var (
	ErrRefreshInvalid = apperr.New(apperr.Unauthenticated, "INVALID_REFRESH_TOKEN", "invalid, expired or revoked refresh token")
	ErrRefreshReused  = errors.New("refresh token reused: session family revoked")
)

func (s *Service) newRefreshToken(userID, familyID string) (string, RefreshToken) {
	tok := RefreshTokenPrefix + randomToken(32)
	now := s.now()
	return tok, RefreshToken{Hash: hashSecret(tok), FamilyID: familyID, UserID: userID,
		ExpireTime: now.Add(min(s.refreshTTL, s.refreshAbsoluteTTL)), FamilyStartTime: now}
}

// WithRefreshAbsoluteTTL sets how long a refresh family lives from its login, however often it
// is refreshed.
func (s *Service) WithRefreshAbsoluteTTL(d time.Duration) *Service {
	s.refreshAbsoluteTTL = d
	return s
}

// startSession issues an access token and the first refresh token of a new family, stored
// with rec (the audit record of the login).
func (s *Service) startSession(ctx context.Context, u User, rec *AuditEntry) (Token, error) {
	tok, err := s.issue(ctx, u)
	if err != nil {
		return Token{}, err
	}
	refresh, rt := s.newRefreshToken(u.ID, newUUID())
	if err := s.store.InsertRefreshToken(ctx, rt, rec); err != nil {
		return Token{}, err
	}
	tok.RefreshToken, tok.RefreshExpireTime = refresh, rt.ExpireTime
	return tok, nil
}

// Refresh rotates a refresh token and issues a new access token. The rotation is stored with
// the call's audit record, in the chain of the token's user, so the signing key is found
// first: once the rotation commits, only signing is left to do.
func (s *Service) Refresh(ctx context.Context, refresh string) (Token, error) {
	if !strings.HasPrefix(refresh, RefreshTokenPrefix) || len(refresh) > 128 {
		return Token{}, ErrRefreshInvalid
	}
	hash := hashSecret(refresh)
	owner, err := s.store.RefreshTokenUser(ctx, hash)
	switch {
	case apperr.HasCode(err, apperr.NotFound):
		return Token{}, ErrRefreshInvalid
	case err != nil:
		return Token{}, err
	}
	kid, key, err := s.keys.Signer(ctx)
	if err != nil {
		return Token{}, err
	}
	next, rt := s.newRefreshToken("", "")
	u, familyStart, err := s.store.RotateRefreshToken(ctx, hash, rt, s.now().Add(-s.refreshAbsoluteTTL),
		takeAudit(ctx, owner.TenantID, owner.ID, owner.ID))
	if errors.Is(err, ErrRefreshReused) {
		audit.Annotate(ctx, u.TenantID, u.ID, "")
		return Token{}, ErrRefreshInvalid
	}
	if err != nil {
		return Token{}, err
	}
	audit.Annotate(ctx, u.TenantID, u.ID, u.ID)
	tok, err := s.sign(kid, key, u)
	if err != nil {
		return Token{}, err
	}
	// The stored expiry may outlast the family; the family's end is what the client can count on.
	tok.RefreshToken, tok.RefreshExpireTime = next, minTime(rt.ExpireTime, familyStart.Add(s.refreshAbsoluteTTL))
	return tok, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// Logout revokes the session family of a refresh token, with the call's audit record in the
// chain of the token's user. Unknown tokens are ignored, so the answer says nothing about them
// (the access layer records such a call: it changed nothing).
func (s *Service) Logout(ctx context.Context, refresh string) error {
	if !strings.HasPrefix(refresh, RefreshTokenPrefix) || len(refresh) > 128 {
		return nil
	}
	hash := hashSecret(refresh)
	owner, err := s.store.RefreshTokenUser(ctx, hash)
	switch {
	case apperr.HasCode(err, apperr.NotFound):
		return nil
	case err != nil:
		return err
	}
	u, err := s.store.RevokeRefreshFamily(ctx, hash, takeAudit(ctx, owner.TenantID, owner.ID, owner.ID))
	if err == nil && u.ID != "" {
		audit.Annotate(ctx, u.TenantID, u.ID, u.ID)
	}
	return err
}

// RevokeUserSessions ends every session of a user of the caller's tenant.
func (s *Service) RevokeUserSessions(ctx context.Context, caller *authn.Principal, id string) (int64, error) {
	if err := ValidateID("id", id); err != nil {
		return 0, err
	}
	if err := s.checkTarget(ctx, caller, id); err != nil {
		return 0, err
	}
	return s.store.RevokeUserSessions(ctx, id, takeAudit(ctx, caller.TenantID, "", id))
}

// ChangePassword changes the calling user's password and ends all their sessions. A wrong
// current password counts as a failed login of the account from clientAddr (may be empty), and
// the check is throttled like Login.
func (s *Service) ChangePassword(ctx context.Context, caller *authn.Principal, current, next, clientAddr string) error {
	if caller.Kind != authn.KindAccessToken {
		return apperr.New(apperr.PermissionDenied, "USERS_ONLY", "only a logged-in user can change their password")
	}
	var v apperr.Violations
	if n := len(next); n < MinPasswordLen || n > MaxPasswordLen {
		v.Add("new_password", "must be %d to %d bytes", MinPasswordLen, MaxPasswordLen)
	}
	if len(current) > MaxPasswordLen {
		v.Add("current_password", "is too long")
	}
	if err := v.Err(); err != nil {
		return err
	}
	account, err := s.accountOf(ctx, caller)
	if err != nil {
		return err
	}
	if err := s.checkLoginThrottle(ctx, account, clientAddr); err != nil {
		return err
	}
	hash, err := s.store.PasswordHash(ctx, caller.TenantID, caller.Subject)
	if err != nil {
		return err
	}
	if !CheckPassword(hash, current) {
		address := ""
		if clientAddr != "" {
			address = addressKey(clientAddr)
		}
		if err := s.recordFailure(ctx, account, address); err != nil {
			return err
		}
		v.Add("current_password", "is not correct")
		return v.Err()
	}
	// The right password, as at a login: the account's failures are cleared, the address known.
	if err := s.store.ClearLoginFailures(ctx, account, nil); err != nil {
		return err
	}
	if err := s.rememberAddress(ctx, account, clientAddr); err != nil {
		return err
	}
	newHash, err := HashPassword(next)
	if err != nil {
		return err
	}
	return s.store.ChangePassword(ctx, caller.TenantID, caller.Subject, newHash, takeAudit(ctx, caller.TenantID, "", ""))
}

// accountOf is the throttling key of the calling user: the one Login uses for them.
func (s *Service) accountOf(ctx context.Context, caller *authn.Principal) (string, error) {
	u, err := s.store.GetUser(ctx, caller.TenantID, caller.Subject)
	if err != nil {
		return "", err
	}
	slug := ""
	if caller.TenantID != "" {
		t, err := s.store.GetTenant(ctx, caller.TenantID)
		if err != nil {
			return "", err
		}
		slug = t.Slug
	}
	return accountKey(slug, u.Email), nil
}
