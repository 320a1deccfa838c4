package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// DefaultAccessTokenTTL is how long an access token lives unless configured otherwise.
const DefaultAccessTokenTTL = 15 * time.Minute

// Service implements the auth use cases on top of a Store.
type Service struct {
	store      Store
	keys       *Keyring
	tokenTTL   time.Duration
	refreshTTL time.Duration
	throttle   ThrottlePolicy
	now        func() time.Time

	// refreshAbsoluteTTL bounds a refresh family from its login, however often it rotates.
	refreshAbsoluteTTL time.Duration
}

// NewService returns the auth service. Call Keys().Load before serving.
func NewService(store Store, tokenTTL time.Duration) *Service {
	return &Service{store: store, keys: NewKeyring(store, tokenTTL), tokenTTL: tokenTTL,
		refreshTTL: DefaultRefreshTTL, refreshAbsoluteTTL: DefaultRefreshAbsoluteTTL, throttle: DefaultThrottle, now: time.Now}
}

// WithKeyEncryption sets the key-encryption keys that protect the signing keys at rest
// (required before Keys().Load).
func (s *Service) WithKeyEncryption(k *KeyEncryptionKeys) *Service { s.keys.kek = k; return s }

// WithClock replaces the service's clock (tests move time forward; the database keeps its own).
func (s *Service) WithClock(now func() time.Time) *Service { s.now = now; return s }

// WithThrottle replaces the login throttling policy (tests use small numbers).
func (s *Service) WithThrottle(p ThrottlePolicy) *Service { s.throttle = p; return s }

// Keys returns the signing keyring (also the KeySource of the service's own verifier).
func (s *Service) Keys() *Keyring { return s.keys }

// Token is an issued access token.
type Token struct {
	AccessToken       string
	ExpireTime        time.Time
	RefreshToken      string
	RefreshExpireTime time.Time
}

var errBadLogin = apperr.New(apperr.Unauthenticated, "INVALID_LOGIN", "invalid tenant, email or password")

// Login checks password credentials and starts a session: an access token and a refresh
// token. The answer for an unknown tenant, an unknown email, a wrong password or a disabled
// user is the same, and takes as long. Failures are throttled per account and per client
// address (clientAddr, may be empty).
func (s *Service) Login(ctx context.Context, tenantSlug, email, password, clientAddr string) (Token, error) {
	if err := ValidateLogin(tenantSlug, email, password); err != nil {
		return Token{}, err
	}
	account, address := accountKey(tenantSlug, email), ""
	if clientAddr != "" {
		address = addressKey(clientAddr)
	}
	audit.Annotate(ctx, "", "", account)
	if err := s.checkLoginThrottle(ctx, account, clientAddr); err != nil {
		return Token{}, err
	}
	tenantID := ""
	tenantOK := true
	if tenantSlug != "" {
		t, err := s.store.GetTenantBySlug(ctx, tenantSlug)
		switch {
		case apperr.HasCode(err, apperr.NotFound):
			tenantOK = false
		case err != nil:
			return Token{}, err
		default:
			tenantID = t.ID
			tenantOK = t.State == TenantActive
			audit.Annotate(ctx, tenantID, "", account) // failed logins show in the tenant's audit log
		}
	}
	hash := dummyHash
	var user User
	found := false
	if tenantOK {
		u, h, err := s.store.UserCredentials(ctx, tenantID, email)
		switch {
		case apperr.HasCode(err, apperr.NotFound):
		case err != nil:
			return Token{}, err
		default:
			user, hash, found = u, h, true
		}
	}
	if !CheckPassword(hash, password) || !found || !tenantOK || user.State != UserActive {
		if err := s.recordFailure(ctx, account, address); err != nil {
			return Token{}, err
		}
		return Token{}, errBadLogin
	}
	if err := s.store.ClearLoginFailures(ctx, account, nil); err != nil {
		return Token{}, err
	}
	if err := s.rememberAddress(ctx, account, clientAddr); err != nil {
		return Token{}, err
	}
	audit.Annotate(ctx, tenantID, user.ID, user.ID)
	return s.startSession(ctx, user, takeAudit(ctx, tenantID, user.ID, user.ID))
}

// UnlockUser clears the failed-login lock of a user of the caller's tenant.
func (s *Service) UnlockUser(ctx context.Context, caller *authn.Principal, id string) (User, error) {
	if err := ValidateID("id", id); err != nil {
		return User{}, err
	}
	u, err := s.store.GetUser(ctx, caller.TenantID, id)
	if err != nil {
		return User{}, err
	}
	if err := checkTargetWithin(caller, u); err != nil {
		return User{}, err
	}
	t, err := s.store.GetTenant(ctx, caller.TenantID)
	if err != nil {
		return User{}, err
	}
	return u, s.store.ClearLoginFailures(ctx, accountKey(t.Slug, u.Email), takeAudit(ctx, caller.TenantID, "", id))
}

func (s *Service) issue(ctx context.Context, u User) (Token, error) {
	kid, key, err := s.keys.Signer(ctx)
	if err != nil {
		return Token{}, err
	}
	return s.sign(kid, key, u)
}

// sign issues an access token for u signed with key kid.
func (s *Service) sign(kid string, key ed25519.PrivateKey, u User) (Token, error) {
	now := s.now()
	exp := now.Add(s.tokenTTL)
	jti := make([]byte, 16)
	_, _ = rand.Read(jti)
	claims := authn.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    authn.Issuer,
			Audience:  jwt.ClaimStrings{authn.Audience},
			Subject:   u.ID,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        hex.EncodeToString(jti),
		},
		TenantID:    u.TenantID,
		Role:        string(u.Role),
		UserEpoch:   u.TokenEpoch,
		TenantEpoch: u.TenantTokenEpoch,
	}
	signed, err := authn.Sign(claims, kid, key)
	if err != nil {
		return Token{}, err
	}
	return Token{AccessToken: signed, ExpireTime: exp}, nil
}

// CreateTenant creates an active tenant.
func (s *Service) CreateTenant(ctx context.Context, slug, displayName string) (Tenant, error) {
	if err := ValidateTenantInput(slug, displayName); err != nil {
		return Tenant{}, err
	}
	t := Tenant{ID: newUUID(), Slug: slug, DisplayName: displayName, State: TenantActive}
	return s.store.CreateTenant(ctx, t, takeAudit(ctx, "", "", t.ID))
}

// GetTenant returns a tenant.
func (s *Service) GetTenant(ctx context.Context, id string) (Tenant, error) {
	if err := ValidateID("id", id); err != nil {
		return Tenant{}, err
	}
	return s.store.GetTenant(ctx, id)
}

// ListTenants returns one page of tenants and the next page's token.
func (s *Service) ListTenants(ctx context.Context, p Page) ([]Tenant, string, error) {
	ts, err := s.store.ListTenants(ctx, p)
	if err != nil || len(ts) == 0 {
		return ts, "", err
	}
	last := ts[len(ts)-1]
	return ts, NextPageToken(p, len(ts), Cursor{CreateTime: last.CreateTime, ID: last.ID}), nil
}

// SuspendTenant suspends a tenant; suspending a suspended tenant changes nothing.
func (s *Service) SuspendTenant(ctx context.Context, id string) (Tenant, error) {
	if err := ValidateID("id", id); err != nil {
		return Tenant{}, err
	}
	return s.store.SetTenantState(ctx, id, TenantSuspended, takeAudit(ctx, "", "", id))
}

// SuspendTenantForBilling is SuspendTenant on billing's behalf (the grace period of a flagged
// billing account ran out). Its audit record sits in the suspended tenant's own chain, so the
// tenant's admins see why they lost access. The reason is billing's to keep (on the account);
// auth only bounds it.
func (s *Service) SuspendTenantForBilling(ctx context.Context, id, reason string) (Tenant, error) {
	var v apperr.Violations
	if ValidateID("tenant_id", id) != nil {
		v.Add("tenant_id", "must be a tenant id (UUID)")
	}
	if len(reason) > 512 {
		v.Add("reason", "must be at most 512 bytes")
	}
	if err := v.Err(); err != nil {
		return Tenant{}, err
	}
	return s.store.SetTenantState(ctx, id, TenantSuspended, takeAudit(ctx, id, "", id))
}

// CreateUser adds an active user to the tenant of the caller.
func (s *Service) CreateUser(ctx context.Context, caller *authn.Principal, u User, password string) (User, error) {
	if err := ValidateUserInput(u.Email, u.DisplayName, u.Role, password); err != nil {
		return User{}, err
	}
	if err := CheckDelegation(caller, "user.role", u.Role); err != nil {
		return User{}, err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return User{}, err
	}
	// Server-owned fields come from the server, whatever the request said.
	u.ID, u.TenantID, u.State = newUUID(), caller.TenantID, UserActive
	return s.store.CreateUser(ctx, u, hash, takeAudit(ctx, caller.TenantID, "", u.ID))
}

// GetUser returns a user of the caller's tenant.
func (s *Service) GetUser(ctx context.Context, caller *authn.Principal, id string) (User, error) {
	if err := ValidateID("id", id); err != nil {
		return User{}, err
	}
	return s.store.GetUser(ctx, caller.TenantID, id)
}

// ListUsers returns one page of the caller's tenant's users and the next page's token.
func (s *Service) ListUsers(ctx context.Context, caller *authn.Principal, p Page) ([]User, string, error) {
	us, err := s.store.ListUsers(ctx, caller.TenantID, p)
	if err != nil || len(us) == 0 {
		return us, "", err
	}
	last := us[len(us)-1]
	return us, NextPageToken(p, len(us), Cursor{CreateTime: last.CreateTime, ID: last.ID}), nil
}

// DisableUser disables a user of the caller's tenant and ends its sessions. Admins cannot
// disable themselves, so a tenant cannot lock out its last admin by accident.
func (s *Service) DisableUser(ctx context.Context, caller *authn.Principal, id string) (User, error) {
	if err := ValidateID("id", id); err != nil {
		return User{}, err
	}
	if id == caller.Subject {
		return User{}, apperr.New(apperr.FailedPrecondition, "SELF_CHANGE", "you cannot disable yourself")
	}
	if err := s.checkTarget(ctx, caller, id); err != nil {
		return User{}, err
	}
	return s.store.SetUserState(ctx, caller.TenantID, id, UserDisabled, takeAudit(ctx, caller.TenantID, "", id))
}

// ChangeUserRole gives a user of the caller's tenant another tenant role; nobody changes their
// own role.
func (s *Service) ChangeUserRole(ctx context.Context, caller *authn.Principal, id string, role rbac.Role) (User, error) {
	if err := apperr.First(ValidateID("id", id), ValidateRole("role", role)); err != nil {
		return User{}, err
	}
	if id == caller.Subject {
		return User{}, apperr.New(apperr.FailedPrecondition, "SELF_CHANGE", "you cannot change your own role")
	}
	if err := CheckDelegation(caller, "role", role); err != nil {
		return User{}, err
	}
	if err := s.checkTarget(ctx, caller, id); err != nil {
		return User{}, err
	}
	return s.store.SetUserRole(ctx, caller.TenantID, id, role, takeAudit(ctx, caller.TenantID, "", id))
}

// PublishedKeys lists the keys that verify access tokens.
func (s *Service) PublishedKeys(ctx context.Context) ([]PublicKey, error) {
	return s.keys.Published(ctx)
}

// RotateSigningKey makes a new key sign tokens.
func (s *Service) RotateSigningKey(ctx context.Context) (PublicKey, error) {
	return s.keys.Rotate(ctx, takeAudit(ctx, "", "", ""))
}
