package auth

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"strings"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// Invitations are how people join a tenant: a platform operator (any tenant, any tenant role)
// or a tenant admin (their own tenant, a role they could grant) invites an email with a role and
// gets a one-time token; the invitee presents it with the password they choose, which creates
// their user and uses up the token in one transaction. The token is cmi_<id hex>_<32 random
// bytes>: the id finds the row, and only its SHA-256 is stored, compared in constant time.

// InvitationState is the stored lifecycle state of an invitation. "expired" is never stored: a
// pending invitation past its expiry reads as expired.
type InvitationState string

// Invitation states.
const (
	InvitationPending  InvitationState = "pending"
	InvitationAccepted InvitationState = "accepted"
	InvitationRevoked  InvitationState = "revoked"
	InvitationExpired  InvitationState = "expired"
)

// Invitation is an offer to join a tenant with a role.
type Invitation struct {
	ID         string
	TenantID   string
	Email      string
	Role       rbac.Role
	State      InvitationState
	Creator    string
	CreateTime time.Time
	ExpireTime time.Time
	AcceptTime *time.Time
	RevokeTime *time.Time
	// UserID is the user the invitation created, once accepted.
	UserID string
}

// StateAt is the state as seen at now: a pending invitation past its expiry is expired.
func (i Invitation) StateAt(now time.Time) InvitationState {
	if i.State == InvitationPending && !i.ExpireTime.After(now) {
		return InvitationExpired
	}
	return i.State
}

// Limits and defaults of invitations.
const (
	InvitationTokenPrefix    = "cmi_"
	DefaultInvitationTTL     = 7 * 24 * time.Hour
	MaxInvitationTTL         = 30 * 24 * time.Hour
	maxInvitationTokenLength = 128
)

// Errors of AcceptInvitation. An unknown, malformed or revoked token — or one whose secret does
// not match — all answer ErrInvitationInvalid, so a guess learns nothing; only the holder of a
// real token learns that it was used or has expired.
var (
	ErrInvitationInvalid = apperr.New(apperr.NotFound, "INVALID_INVITATION", "invitation token is unknown or revoked")
	ErrInvitationUsed    = apperr.New(apperr.FailedPrecondition, "INVITATION_USED", "invitation was already accepted: log in instead")
	ErrInvitationExpired = apperr.New(apperr.FailedPrecondition, "INVITATION_EXPIRED", "invitation has expired: ask for a new one")
)

// CreateInvitation invites email to the caller's tenant with role, which the caller must be able
// to grant (CheckDelegation). It returns the invitation and its token — the only time the token
// exists in clear. expire nil means DefaultInvitationTTL from now.
func (s *Service) CreateInvitation(ctx context.Context, caller *authn.Principal, email string, role rbac.Role, expire *time.Time) (Invitation, string, error) {
	var v apperr.Violations
	inv := s.checkInvitation(&v, email, role, expire)
	if caller.TenantID == "" {
		v.Add("tenant", "platform operators invite into a tenant with CreateTenantInvitation")
	}
	if err := v.Err(); err != nil {
		return Invitation{}, "", err
	}
	if err := CheckDelegation(caller, "invitation.role", role); err != nil {
		return Invitation{}, "", err
	}
	inv.TenantID, inv.Creator = caller.TenantID, caller.Subject
	return s.storeInvitation(ctx, caller, inv)
}

// CreateTenantInvitation is the platform operator's CreateInvitation: any active tenant, any
// tenant role. It is the one grant that does not follow delegation — the operator holds none of
// a tenant's permissions, and owning tenant creation is what makes a new tenant's first admin
// theirs to appoint. The access rule (tenants.manage) is what authorizes it.
func (s *Service) CreateTenantInvitation(ctx context.Context, caller *authn.Principal, tenantID, email string, role rbac.Role, expire *time.Time) (Invitation, string, error) {
	var v apperr.Violations
	if !uuidPattern.MatchString(tenantID) {
		v.Add("tenant_id", "must be a resource id (UUID)")
	}
	inv := s.checkInvitation(&v, email, role, expire)
	if err := v.Err(); err != nil {
		return Invitation{}, "", err
	}
	inv.TenantID, inv.Creator = tenantID, caller.Subject
	return s.storeInvitation(ctx, caller, inv)
}

// checkInvitation validates the fields a caller sets into v and fills in the expiry.
func (s *Service) checkInvitation(v *apperr.Violations, email string, role rbac.Role, expire *time.Time) Invitation {
	checkEmail(v, "invitation.email", email)
	checkTenantRole(v, "invitation.role", role)
	now := s.now()
	exp := now.Add(DefaultInvitationTTL)
	if expire != nil {
		if !expire.After(now) || expire.Sub(now) > MaxInvitationTTL {
			v.Add("invitation.expire_time", "must be in the future and within 30 days")
		}
		exp = *expire
	}
	return Invitation{Email: email, Role: role, State: InvitationPending, ExpireTime: exp}
}

// storeInvitation stores inv in its tenant, which must be active, with a new id and token. Its
// audit record goes to the caller's chain (the platform's for an operator).
func (s *Service) storeInvitation(ctx context.Context, caller *authn.Principal, inv Invitation) (Invitation, string, error) {
	t, err := s.store.GetTenant(ctx, inv.TenantID)
	if err != nil {
		return Invitation{}, "", err
	}
	if t.State != TenantActive {
		return Invitation{}, "", apperr.New(apperr.FailedPrecondition, "TENANT_SUSPENDED", "tenant %s is suspended", t.Slug)
	}
	inv.ID = newUUID()
	token := InvitationTokenPrefix + strings.ReplaceAll(inv.ID, "-", "") + "_" + randomToken(32)
	created, err := s.store.CreateInvitation(ctx, inv, hashSecret(token), takeAudit(ctx, caller.TenantID, "", inv.ID))
	if err != nil {
		return Invitation{}, "", err
	}
	return s.withState(created), token, nil
}

// ListInvitations returns one page of the caller's tenant's invitations and the next page's token.
func (s *Service) ListInvitations(ctx context.Context, caller *authn.Principal, p Page) ([]Invitation, string, error) {
	is, err := s.store.ListInvitations(ctx, caller.TenantID, p)
	if err != nil || len(is) == 0 {
		return is, "", err
	}
	for i := range is {
		is[i] = s.withState(is[i])
	}
	last := is[len(is)-1]
	return is, NextPageToken(p, len(is), Cursor{CreateTime: last.CreateTime, ID: last.ID}), nil
}

// RevokeInvitation revokes an invitation of the caller's tenant; revoking twice keeps the first
// time, and an accepted invitation stays accepted (FAILED_PRECONDITION).
func (s *Service) RevokeInvitation(ctx context.Context, caller *authn.Principal, id string) (Invitation, error) {
	if err := ValidateID("id", id); err != nil {
		return Invitation{}, err
	}
	inv, err := s.store.RevokeInvitation(ctx, caller.TenantID, id, takeAudit(ctx, caller.TenantID, "", id))
	return s.withState(inv), err
}

// AcceptedInvitation is what AcceptInvitation created.
type AcceptedInvitation struct {
	User       User
	TenantSlug string
}

// AcceptInvitation creates the invitee's active user — the invitation's tenant, email and role,
// with displayName and password — and marks the invitation accepted, in one transaction. Every
// call hashes the password before looking at the token, so an unknown, malformed or revoked
// token takes as long as a good one and answers ErrInvitationInvalid; a used one answers
// ErrInvitationUsed and an expired one ErrInvitationExpired. The audit record of a call on a real
// invitation goes to its tenant's chain, with the new user as actor when it succeeds.
func (s *Service) AcceptInvitation(ctx context.Context, token, displayName, password string) (AcceptedInvitation, error) {
	var v apperr.Violations
	checkName(&v, "display_name", displayName, false)
	if n := len(password); n < MinPasswordLen || n > MaxPasswordLen {
		v.Add("password", "must be %d to %d bytes", MinPasswordLen, MaxPasswordLen)
	}
	if err := v.Err(); err != nil {
		return AcceptedInvitation{}, err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return AcceptedInvitation{}, err
	}
	id, ok := parseInvitationID(token)
	if !ok {
		id = "00000000-0000-0000-0000-000000000000" // look up anyway: malformed takes as long as unknown
	}
	inv, stored, err := s.store.InvitationForAccept(ctx, id)
	switch {
	case apperr.HasCode(err, apperr.NotFound):
		inv, stored = Invitation{}, make([]byte, 32)
	case err != nil:
		return AcceptedInvitation{}, err
	}
	if subtle.ConstantTimeCompare(stored, hashSecret(token)) != 1 || !ok || inv.ID == "" || inv.State == InvitationRevoked {
		return AcceptedInvitation{}, ErrInvitationInvalid
	}
	audit.Annotate(ctx, inv.TenantID, "", inv.ID)
	switch inv.StateAt(s.now()) {
	case InvitationAccepted:
		return AcceptedInvitation{}, ErrInvitationUsed
	case InvitationExpired:
		return AcceptedInvitation{}, ErrInvitationExpired
	}
	t, err := s.store.GetTenant(ctx, inv.TenantID)
	if err != nil {
		return AcceptedInvitation{}, err
	}
	if t.State != TenantActive {
		return AcceptedInvitation{}, apperr.New(apperr.FailedPrecondition, "TENANT_SUSPENDED", "the tenant of this invitation is suspended")
	}
	userID := newUUID()
	u, err := s.store.AcceptInvitation(ctx, inv.ID, User{
		ID: userID, TenantID: inv.TenantID, Email: inv.Email, DisplayName: displayName, Role: inv.Role, State: UserActive,
	}, hash, takeAudit(ctx, inv.TenantID, userID, inv.ID))
	if err != nil {
		return AcceptedInvitation{}, err
	}
	audit.Annotate(ctx, inv.TenantID, u.ID, inv.ID)
	return AcceptedInvitation{User: u, TenantSlug: t.Slug}, nil
}

// withState replaces the stored state with the state as seen now.
func (s *Service) withState(inv Invitation) Invitation {
	if inv.ID != "" {
		inv.State = inv.StateAt(s.now())
	}
	return inv
}

// parseInvitationID extracts the invitation id from cmi_<32 hex>_<secret>.
func parseInvitationID(token string) (string, bool) {
	rest, ok := strings.CutPrefix(token, InvitationTokenPrefix)
	if !ok || len(token) > maxInvitationTokenLength {
		return "", false
	}
	idHex, tail, ok := strings.Cut(rest, "_")
	if !ok || len(idHex) != 32 || tail == "" || strings.ToLower(idHex) != idHex {
		return "", false
	}
	if _, err := hex.DecodeString(idHex); err != nil {
		return "", false
	}
	return idHex[0:8] + "-" + idHex[8:12] + "-" + idHex[12:16] + "-" + idHex[16:20] + "-" + idHex[20:32], true
}
