// Package auth is the domain of the auth service: tenants, users, password login, access
// tokens and the keys that sign them. It holds the business rules and validation; SQL lives in
// package postgres and gRPC in package grpcapi.
package auth

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// TenantState is the lifecycle state of a tenant.
type TenantState string

// Tenant states.
const (
	TenantActive    TenantState = "active"
	TenantSuspended TenantState = "suspended"
)

// Tenant is a customer organisation.
type Tenant struct {
	ID          string
	Slug        string
	DisplayName string
	State       TenantState
	CreateTime  time.Time
	UpdateTime  time.Time
}

// UserState is the lifecycle state of a user.
type UserState string

// User states.
const (
	UserActive   UserState = "active"
	UserDisabled UserState = "disabled"
)

// User is a person who logs in; TenantID is empty for platform operators.
type User struct {
	ID          string
	TenantID    string
	Email       string
	DisplayName string
	Role        rbac.Role
	State       UserState
	CreateTime  time.Time
	UpdateTime  time.Time
	// TokenEpoch and TenantTokenEpoch go into the user's access tokens: raising either (see
	// Revocation) revokes every token issued before.
	TokenEpoch, TenantTokenEpoch int64
}

// RevocationKind is what a Revocation names.
type RevocationKind string

// Revocation kinds.
const (
	RevokedUser   RevocationKind = "user"
	RevokedTenant RevocationKind = "tenant"
	RevokedAPIKey RevocationKind = "api_key"
)

// Revocation says that the access tokens of a user or tenant issued under a lower token epoch,
// or an API key, no longer count.
type Revocation struct {
	Kind  RevocationKind
	ID    string
	Epoch int64
	Time  time.Time
}

// Page asks for one page of a list.
type Page struct {
	Size  int
	After *Cursor // nil for the first page
}

// Cursor is the position after the last item of a page: lists are ordered by (create time, id).
type Cursor struct {
	CreateTime time.Time
	ID         string
}

// Store is what the domain needs from persistence. Every tenant-scoped call takes the tenant
// explicitly; a row of another tenant is reported as not found.
//
// Every method that makes an audited change takes the audit record of the call (rec, from
// takeAudit) and, when it is not nil, appends it to its tenant's audit chain in the transaction
// of the change: the change and its record commit together or not at all. A method that fails
// appends nothing.
type Store interface {
	// CreateTenant stores t with its id (the domain's; a new one when empty).
	CreateTenant(ctx context.Context, t Tenant, rec *AuditEntry) (Tenant, error)
	GetTenant(ctx context.Context, id string) (Tenant, error)
	GetTenantBySlug(ctx context.Context, slug string) (Tenant, error)
	ListTenants(ctx context.Context, p Page) ([]Tenant, error)
	SetTenantState(ctx context.Context, id string, s TenantState, rec *AuditEntry) (Tenant, error)

	// CreateUser stores u with its id (the domain's; a new one when empty).
	CreateUser(ctx context.Context, u User, passwordHash string, rec *AuditEntry) (User, error)
	GetUser(ctx context.Context, tenantID, id string) (User, error)
	ListUsers(ctx context.Context, tenantID string, p Page) ([]User, error)
	// SetUserState sets a user's state; disabling also ends every session of the user, in the
	// same transaction.
	SetUserState(ctx context.Context, tenantID, id string, s UserState, rec *AuditEntry) (User, error)
	SetUserRole(ctx context.Context, tenantID, id string, r rbac.Role, rec *AuditEntry) (User, error)
	// UserCredentials finds a user by tenant ("" for platform operators) and email.
	UserCredentials(ctx context.Context, tenantID, email string) (User, string, error)

	ListSigningKeys(ctx context.Context, retiredSince time.Time) ([]StoredKey, error)
	// InsertSigningKey stores key (its KEKID and Sealed) as the active key and retires the
	// previous active one.
	InsertSigningKey(ctx context.Context, key StoredKey, rec *AuditEntry) error
	// SigningKeysToReseal lists every stored key, however old, not encrypted under kekID.
	SigningKeysToReseal(ctx context.Context, kekID string) ([]StoredKey, error)
	// ResealSigningKey replaces the stored seed of kid with sealed under newKEK, unless the row
	// is no longer under oldKEK ("" for clear): another replica did it first.
	ResealSigningKey(ctx context.Context, kid, oldKEK, newKEK string, sealed []byte) error
	CreateAPIKey(ctx context.Context, k APIKey, secretHash []byte, rec *AuditEntry) (APIKey, error)
	GetAPIKey(ctx context.Context, tenantID, id string) (APIKey, error)
	ListAPIKeys(ctx context.Context, tenantID string, p Page) ([]APIKey, error)
	RevokeAPIKey(ctx context.Context, tenantID, id string, rec *AuditEntry) (APIKey, error)
	// APIKeyForVerify finds a key by id in any tenant, with its secret hash and tenant state.
	APIKeyForVerify(ctx context.Context, id string) (APIKey, []byte, TenantState, error)
	// ListRevocations lists users and tenants whose token epoch changed, and API keys revoked,
	// after since.
	ListRevocations(ctx context.Context, since time.Time) ([]Revocation, error)
	// TokenEpochs returns the current token epochs of a user and of its tenant (0 without one).
	TokenEpochs(ctx context.Context, userID string) (user, tenant int64, err error)
	// TouchAPIKey sets the last-used time unless it was set within interval.
	TouchAPIKey(ctx context.Context, id string, interval time.Duration) error

	// CreateInvitation stores an invitation with the hash of its token; an email that is already
	// a user of the tenant is ALREADY_EXISTS.
	CreateInvitation(ctx context.Context, inv Invitation, tokenHash []byte, rec *AuditEntry) (Invitation, error)
	ListInvitations(ctx context.Context, tenantID string, p Page) ([]Invitation, error)
	// RevokeInvitation revokes a pending invitation (keeping the first revoke time); an
	// accepted one is FAILED_PRECONDITION.
	RevokeInvitation(ctx context.Context, tenantID, id string, rec *AuditEntry) (Invitation, error)
	// InvitationForAccept finds an invitation by id in any tenant, with its token hash.
	InvitationForAccept(ctx context.Context, id string) (Invitation, []byte, error)
	// AcceptInvitation, in one transaction, marks a pending, unexpired invitation accepted and
	// creates u (with its id) with passwordHash; otherwise it returns ErrInvitationUsed,
	// ErrInvitationExpired or ErrInvitationInvalid and changes nothing.
	AcceptInvitation(ctx context.Context, id string, u User, passwordHash string, rec *AuditEntry) (User, error)

	// InsertRefreshToken starts a session: the first refresh token of a family.
	InsertRefreshToken(ctx context.Context, t RefreshToken, rec *AuditEntry) error
	// RefreshTokenUser returns the user of the refresh token with hash (NOT_FOUND when unknown),
	// whatever the token's state.
	RefreshTokenUser(ctx context.Context, hash []byte) (User, error)
	// RotateRefreshToken marks the token with hash used and stores next in its family for the
	// same user (with the family's start time, whatever next says), returning the user and the
	// family's start time. A used token revokes its family (committed) and returns
	// ErrRefreshReused with the user; an unknown, expired or revoked token, a token whose family
	// started before oldestStart, or an inactive user or tenant, returns ErrRefreshInvalid. rec
	// is appended only with a rotation.
	RotateRefreshToken(ctx context.Context, hash []byte, next RefreshToken, oldestStart time.Time, rec *AuditEntry) (User, time.Time, error)
	// RevokeRefreshFamily revokes the family of the token with hash; it returns the user, or
	// a zero User (and appends nothing) when the token is unknown.
	RevokeRefreshFamily(ctx context.Context, hash []byte, rec *AuditEntry) (User, error)
	RevokeUserSessions(ctx context.Context, userID string, rec *AuditEntry) (int64, error)
	PasswordHash(ctx context.Context, tenantID, userID string) (string, error)
	// ChangePassword stores a new hash and revokes every session of the user, atomically.
	ChangePassword(ctx context.Context, tenantID, userID, hash string, rec *AuditEntry) error

	// LoginLockedUntil returns the latest lock among keys (zero when none is locked).
	LoginLockedUntil(ctx context.Context, keys []string) (time.Time, error)
	// RecordLoginFailure counts a failure of key within window and returns the count.
	RecordLoginFailure(ctx context.Context, key string, window time.Duration) (int, error)
	LockLogin(ctx context.Context, key string, until time.Time) error
	ClearLoginFailures(ctx context.Context, key string, rec *AuditEntry) error
	// RememberLoginAddress records that account logged in from the address with hash: it keeps
	// the newest keep addresses of the account seen since oldest and forgets the others.
	RememberLoginAddress(ctx context.Context, account string, hash []byte, keep int, oldest time.Time) error
	// KnownLoginAddress reports whether account logged in from the address with hash since oldest.
	KnownLoginAddress(ctx context.Context, account string, hash []byte, oldest time.Time) (bool, error)

	// AppendAudit appends records to their tenants' chains, skipping ids already stored; it
	// returns how many were appended and how many were duplicates. It is the path of records
	// made apart from a change: the access layer's (auth.AuditLog) and other services'.
	AppendAudit(ctx context.Context, recs []AuditEntry) (int, int, error)
	// ListAudit returns records of a chain in sequence order.
	ListAudit(ctx context.Context, chain string, f AuditFilter) ([]AuditEntry, error)

	// Bootstrap creates the operator, a tenant and its admin in one transaction, unless a
	// platform operator exists already; it reports whether it created them.
	Bootstrap(ctx context.Context, b BootstrapAccounts) (bool, error)

	// SubjectUsers returns the users of the tenant (never a platform operator) whose email is
	// one of emails, compared case-insensitively as at login.
	SubjectUsers(ctx context.Context, tenantID string, emails []string) ([]User, error)
	// SubjectInvitations returns the invitations of the tenant to one of emails.
	SubjectInvitations(ctx context.Context, tenantID string, emails []string) ([]Invitation, error)
	// SubjectSessions returns up to limit refresh token families of the user, ordered by family
	// id, after the family afterFamily ("" for the first page).
	SubjectSessions(ctx context.Context, userID, afterFamily string, limit int) ([]Session, error)
	// SubjectAPIKeys returns one page of the API keys of the tenant that creator created.
	SubjectAPIKeys(ctx context.Context, tenantID, creator string, p Page) ([]APIKey, error)
	// EraseSubject, in one transaction, erases what spec names (see ErasureSpec), records the
	// erasure under its tenant and dsr request, appends rec when the call erased anything or
	// started the erasure, and returns the erasure's state, verified. A repeated call adds what
	// it erased to the counts.
	EraseSubject(ctx context.Context, spec ErasureSpec, rec *AuditEntry) (Erasure, error)
	// GetErasure returns the state of an erasure, verified again (NOT_FOUND when unknown).
	GetErasure(ctx context.Context, tenantID, dsrRequest string) (Erasure, error)
}

// Limits on sizes of input fields.
const (
	MaxEmailLen       = 254
	MaxDisplayNameLen = 200
	MinPasswordLen    = 12
	MaxPasswordLen    = 1024
	DefaultPageSize   = 50
	MaxPageSize       = 1000
)

var (
	slugPattern = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{1,38})[a-z0-9]$`)
	uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// ValidateTenantInput checks the fields a caller sets on a new tenant.
func ValidateTenantInput(slug, displayName string) error {
	var v apperr.Violations
	if !slugPattern.MatchString(slug) {
		v.Add("tenant.slug", "must be 3-40 characters of a-z, 0-9 and '-', starting and ending with a letter or digit")
	}
	checkName(&v, "tenant.display_name", displayName, true)
	return v.Err()
}

// ValidateUserInput checks the fields a caller sets on a new user.
func ValidateUserInput(email, displayName string, role rbac.Role, password string) error {
	var v apperr.Violations
	checkEmail(&v, "user.email", email)
	checkName(&v, "user.display_name", displayName, false)
	checkTenantRole(&v, "user.role", role)
	if n := len(password); n < MinPasswordLen || n > MaxPasswordLen {
		v.Add("password", "must be %d to %d bytes", MinPasswordLen, MaxPasswordLen)
	}
	return v.Err()
}

// ValidateLogin checks the shape of login input (not the credentials).
func ValidateLogin(tenantSlug, email, password string) error {
	var v apperr.Violations
	if tenantSlug != "" && !slugPattern.MatchString(tenantSlug) {
		v.Add("tenant", "is not a valid tenant slug")
	}
	checkEmail(&v, "email", email)
	if password == "" || len(password) > MaxPasswordLen {
		v.Add("password", "must be 1 to %d bytes", MaxPasswordLen)
	}
	return v.Err()
}

// ValidateRole checks a role a tenant admin assigns.
func ValidateRole(field string, role rbac.Role) error {
	var v apperr.Violations
	checkTenantRole(&v, field, role)
	return v.Err()
}

// ValidateID checks a resource id.
func ValidateID(field, id string) error {
	var v apperr.Violations
	if !uuidPattern.MatchString(id) {
		v.Add(field, "must be a resource id (UUID)")
	}
	return v.Err()
}

// ParsePage turns page_size and page_token into a Page.
func ParsePage(size int32, token string) (Page, error) {
	var v apperr.Violations
	p := Page{Size: int(size)}
	switch {
	case size < 0:
		v.Add("page_size", "must not be negative")
	case size == 0:
		p.Size = DefaultPageSize
	case size > MaxPageSize:
		p.Size = MaxPageSize
	}
	if token != "" {
		c, err := decodeCursor(token)
		if err != nil {
			v.Add("page_token", "is not a token from a previous page")
		}
		p.After = c
	}
	return p, v.Err()
}

// NextPageToken returns the token of the page after items, or "" when items is not full.
func NextPageToken(p Page, n int, last Cursor) string {
	if n < p.Size {
		return ""
	}
	raw := last.CreateTime.UTC().Format(time.RFC3339Nano) + "|" + last.ID
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

func decodeCursor(token string) (*Cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) > 128 {
		return nil, fmt.Errorf("decode page token")
	}
	ts, id, ok := strings.Cut(string(raw), "|")
	t, err := time.Parse(time.RFC3339Nano, ts)
	if !ok || err != nil || !uuidPattern.MatchString(id) {
		return nil, fmt.Errorf("decode page token")
	}
	return &Cursor{CreateTime: t, ID: id}, nil
}

func checkEmail(v *apperr.Violations, field, email string) {
	if len(email) > MaxEmailLen {
		v.Add(field, "must be at most %d characters", MaxEmailLen)
		return
	}
	a, err := mail.ParseAddress(email)
	if err != nil || a.Address != email || a.Name != "" {
		v.Add(field, "must be a plain email address")
	}
}

func checkName(v *apperr.Violations, field, name string, required bool) {
	switch {
	case required && strings.TrimSpace(name) == "":
		v.Add(field, "is required")
	case !utf8.ValidString(name) || utf8.RuneCountInString(name) > MaxDisplayNameLen:
		v.Add(field, "must be valid UTF-8 of at most %d characters", MaxDisplayNameLen)
	}
}

func checkTenantRole(v *apperr.Violations, field string, role rbac.Role) {
	if !role.TenantScoped() {
		v.Add(field, "must be one of admin, manager, analyst, viewer, privacy_officer")
	}
}
