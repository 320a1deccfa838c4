package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// Data-subject requests (dsr's ParticipantService). What auth holds about a data subject is a
// tenant's staff user, matched by email the way login matches it (case-insensitively), and what
// hangs off that user: its sessions (refresh token families), the API keys it created, the audit
// records where it is the actor, and invitations sent to the email. A platform operator belongs
// to no tenant, so no request ever matches one; another tenant's user with the same email is
// another person as far as the request goes.
//
// An erasure pseudonymizes rather than deletes: the user row stays, under its id, with the email
// replaced by ErasedEmail(id), the display name by ErasedDisplayName and an unusable password,
// disabled; its sessions and API keys are revoked and its token epoch raised, so its access
// tokens die as with any revocation. Audit records are append-only and hash-chained; they name
// the user by id only, so they stay as they are and the chain stays valid. The erasure itself is
// audited (actor: the dsr service). Each erasure is a row of its own (see the store), so a
// repeated StartErasure and GetErasure answer from the database, after any restart, and the
// verification behind done runs against the tables themselves.

// SubjectKind is what a data-subject identifier is.
type SubjectKind int

// Subject identifier kinds (those of campaignmesh.dsr.v1.Identifier).
const (
	SubjectUserID SubjectKind = iota + 1
	SubjectAnonymousID
	SubjectEmail
)

// SubjectIdentifier names a data subject.
type SubjectIdentifier struct {
	Kind  SubjectKind
	Value string
}

// Limits of data-subject requests.
const (
	MaxSubjectIdentifiers   = 1000
	MaxSubjectIdentifierLen = 256
	// subjectAuditPage is how many audit records an export reads at a time: the export's memory
	// stays bounded whatever the size of the chain.
	subjectAuditPage = 500
	// subjectPage is the page size of the other listings of an export.
	subjectPage = 500
)

// ErasedDisplayName is the display name of an erased user.
const ErasedDisplayName = "Erased user"

// ErasedEmail is the email an erased user (or invitation) with id gets: unique per id, in the
// reserved .invalid domain, and revealing nothing of the address it replaces.
func ErasedEmail(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "erased-" + hex.EncodeToString(sum[:])[:16] + "@erased.invalid"
}

var dsrRequestPattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)

// ValidateSubjectRequest checks what every ParticipantService call carries: the tenant, the dsr
// request, and (unless ids is nil and allowed to be) 1 to 1,000 identifiers of a known kind, each
// 1 to 256 characters.
func ValidateSubjectRequest(tenantID, dsrRequest string, ids []SubjectIdentifier, needIDs bool) error {
	var v apperr.Violations
	if !uuidPattern.MatchString(tenantID) {
		v.Add("tenant_id", "must be a tenant id (UUID)")
	}
	if !dsrRequestPattern.MatchString(dsrRequest) {
		v.Add("dsr_request", "must be 1-128 characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'")
	}
	switch {
	case needIDs && len(ids) == 0:
		v.Add("identifiers", "at least one is required")
	case len(ids) > MaxSubjectIdentifiers:
		v.Add("identifiers", "at most %d", MaxSubjectIdentifiers)
	}
	for i, id := range ids {
		if id.Kind < SubjectUserID || id.Kind > SubjectEmail {
			v.Add(fmt.Sprintf("identifiers[%d].kind", i), "must be a known kind")
		}
		if n := utf8.RuneCountInString(id.Value); n == 0 || n > MaxSubjectIdentifierLen || !utf8.ValidString(id.Value) {
			v.Add(fmt.Sprintf("identifiers[%d].value", i), "must be 1 to %d characters of valid UTF-8", MaxSubjectIdentifierLen)
		}
	}
	return v.Err()
}

// subjectEmails returns the distinct email values among ids, lowercased as login compares them.
func subjectEmails(ids []SubjectIdentifier) []string {
	seen := map[string]bool{}
	var out []string
	for _, id := range ids {
		e := strings.ToLower(id.Value)
		if id.Kind == SubjectEmail && !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	return out
}

// ResolveSubject returns the identifiers linked to ids: auth links none (a staff user's email
// leads to no event identifier).
func (s *Service) ResolveSubject(_ context.Context, tenantID, dsrRequest string, ids []SubjectIdentifier) ([]SubjectIdentifier, error) {
	return nil, ValidateSubjectRequest(tenantID, dsrRequest, ids, true)
}

// SubjectRecord is one exported record: its type ("user", "session", "api_key",
// "audit_record", "invitation") and its fields (strings, numbers, booleans, lists and nil).
type SubjectRecord struct {
	Type string
	Data map[string]any
}

// Session is a refresh token family as an export shows it: never a token or its hash.
type Session struct {
	FamilyID     string
	CreateTime   time.Time
	LastUsedTime *time.Time
	ExpireTime   time.Time
	// RevokeTime is set once every token of the family is revoked.
	RevokeTime *time.Time
}

// ExportSubject emits every record auth holds about the subject named by ids in the tenant, one
// at a time: the export holds at most a page of records in memory. Only emails match; other
// identifier kinds name no staff user.
func (s *Service) ExportSubject(ctx context.Context, tenantID, dsrRequest string, ids []SubjectIdentifier, emit func(SubjectRecord) error) error {
	if err := ValidateSubjectRequest(tenantID, dsrRequest, ids, true); err != nil {
		return err
	}
	emails := subjectEmails(ids)
	if len(emails) == 0 {
		return nil
	}
	users, err := s.store.SubjectUsers(ctx, tenantID, emails)
	if err != nil {
		return err
	}
	for _, u := range users {
		if err := s.exportUser(ctx, u, emit); err != nil {
			return err
		}
	}
	invs, err := s.store.SubjectInvitations(ctx, tenantID, emails)
	if err != nil {
		return err
	}
	for _, inv := range invs {
		if err := emit(SubjectRecord{Type: "invitation", Data: map[string]any{
			"id": inv.ID, "email": inv.Email, "role": string(inv.Role), "state": string(inv.StateAt(s.now())),
			"create_time": timeValue(inv.CreateTime), "expire_time": timeValue(inv.ExpireTime),
			"accept_time": timePtrValue(inv.AcceptTime), "revoke_time": timePtrValue(inv.RevokeTime),
		}}); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) exportUser(ctx context.Context, u User, emit func(SubjectRecord) error) error {
	if err := emit(SubjectRecord{Type: "user", Data: map[string]any{
		"id": u.ID, "tenant_id": u.TenantID, "email": u.Email, "display_name": u.DisplayName, "role": string(u.Role),
		"state": string(u.State), "create_time": timeValue(u.CreateTime), "update_time": timeValue(u.UpdateTime),
	}}); err != nil {
		return err
	}
	for after := ""; ; {
		ss, err := s.store.SubjectSessions(ctx, u.ID, after, subjectPage)
		if err != nil {
			return err
		}
		for _, se := range ss {
			if err := emit(SubjectRecord{Type: "session", Data: map[string]any{
				"user_id": u.ID, "family_id": se.FamilyID, "create_time": timeValue(se.CreateTime),
				"last_used_time": timePtrValue(se.LastUsedTime), "expire_time": timeValue(se.ExpireTime),
				"revoke_time": timePtrValue(se.RevokeTime),
			}}); err != nil {
				return err
			}
			after = se.FamilyID
		}
		if len(ss) < subjectPage {
			break
		}
	}
	var after *Cursor
	for {
		ks, err := s.store.SubjectAPIKeys(ctx, u.TenantID, u.ID, Page{Size: subjectPage, After: after})
		if err != nil {
			return err
		}
		for _, k := range ks {
			scopes := make([]any, len(k.Scopes))
			for i, sc := range k.Scopes {
				scopes[i] = sc
			}
			if err := emit(SubjectRecord{Type: "api_key", Data: map[string]any{
				"id": k.ID, "name": k.Name, "scopes": scopes, "prefix": k.SecretPrefix(), "creator": k.Creator,
				"create_time": timeValue(k.CreateTime), "expire_time": timePtrValue(k.ExpireTime),
				"revoke_time": timePtrValue(k.RevokeTime), "last_used_time": timePtrValue(k.LastUsedTime),
			}}); err != nil {
				return err
			}
			after = &Cursor{CreateTime: k.CreateTime, ID: k.ID}
		}
		if len(ks) < subjectPage {
			break
		}
	}
	for seq := int64(0); ; {
		es, err := s.store.ListAudit(ctx, u.TenantID, AuditFilter{Actor: u.ID, AfterSequence: seq, Limit: subjectAuditPage})
		if err != nil {
			return err
		}
		for _, e := range es {
			if err := emit(SubjectRecord{Type: "audit_record", Data: map[string]any{
				"id": e.ID, "sequence": e.Sequence, "time": timeValue(e.Time), "method": e.Method, "resource": e.Resource,
				"outcome": e.OutcomeName, "request_id": e.RequestID, "client_address": e.ClientAddress,
			}}); err != nil {
				return err
			}
			seq = e.Sequence
		}
		if len(es) < subjectAuditPage {
			return nil
		}
	}
}

func timeValue(t time.Time) any { return t.UTC().Format(time.RFC3339Nano) }

func timePtrValue(t *time.Time) any {
	if t == nil {
		return nil
	}
	return timeValue(*t)
}

// ErasureCounts is what an erasure changed, by kind of record.
type ErasureCounts struct {
	Users, Sessions, APIKeys, Invitations int64
}

// Map is the counts as ParticipantService reports them.
func (c ErasureCounts) Map() map[string]int64 {
	return map[string]int64{"users": c.Users, "sessions": c.Sessions, "api_keys": c.APIKeys, "invitations": c.Invitations}
}

// Erasure is the state of one dsr request's erasure in a tenant.
type Erasure struct {
	TenantID, DSRRequest string
	// Counts add up everything every call of the request erased.
	Counts ErasureCounts
	// Remaining counts what the verification still finds: users or invitations of the tenant
	// with one of the emails, and live sessions or API keys of the erased users.
	Remaining int64
}

// Done reports whether the verification found nothing of the subject left.
func (e Erasure) Done() bool { return e.Remaining == 0 }

// ErasureSpec is what the store erases, and how.
type ErasureSpec struct {
	TenantID, DSRRequest string
	// Emails are lowercased; users and invitations of the tenant whose email matches one
	// (lowercased) are erased.
	Emails []string
	// Salt is the random salt of the stored email hashes, used when the erasure is new.
	Salt []byte
	// PasswordHash is an argon2id hash of a random secret nobody knows: an unusable password
	// that costs a login as much as any other, so answer times reveal nothing.
	PasswordHash string
	// Pseudonym is the email an erased user or invitation with the given id gets (ErasedEmail).
	Pseudonym func(id string) string
	// DisplayName is the erased users' display name (ErasedDisplayName).
	DisplayName string
}

// StartErasure erases the subject named by ids from the tenant and returns the erasure's state;
// it is idempotent per dsr request: a repeated call erases only what matches again (nothing,
// unless a user with the email was made since) and answers the state of the whole request. The
// work is one transaction, so the answer is already final: done once verified.
func (s *Service) StartErasure(ctx context.Context, tenantID, dsrRequest string, ids []SubjectIdentifier) (Erasure, error) {
	if err := ValidateSubjectRequest(tenantID, dsrRequest, ids, true); err != nil {
		return Erasure{}, err
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return Erasure{}, fmt.Errorf("read random salt: %w", err)
	}
	unusable, err := HashPassword(randomToken(32))
	if err != nil {
		return Erasure{}, err
	}
	spec := ErasureSpec{TenantID: tenantID, DSRRequest: dsrRequest, Emails: subjectEmails(ids), Salt: salt,
		PasswordHash: unusable, Pseudonym: ErasedEmail, DisplayName: ErasedDisplayName}
	return s.store.EraseSubject(ctx, spec, takeAudit(ctx, tenantID, "", dsrRequest))
}

// GetErasure returns the state of the tenant's erasure for dsrRequest, verified again against
// the tables; NOT_FOUND when StartErasure never ran for it.
func (s *Service) GetErasure(ctx context.Context, tenantID, dsrRequest string) (Erasure, error) {
	if err := ValidateSubjectRequest(tenantID, dsrRequest, nil, false); err != nil {
		return Erasure{}, err
	}
	return s.store.GetErasure(ctx, tenantID, dsrRequest)
}
