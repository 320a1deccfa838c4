package delivery

import (
	"context"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// A data subject's requests (dsr's participant interface): delivery holds contacts and the
// ledger's rows about them. Export returns both; erasure deletes the contacts and blanks the
// personal field (the address) of their ledger rows. A ledger row whose send is in flight or
// awaiting reconciliation (sending, unknown) keeps its address until it settles (the lookup
// needs it; blanking it could send twice or lose the outcome): the erasure reports it as
// remaining, and GetErasure blanks it once settled. A pending row never sends after the
// erasure: it becomes skipped ("erased").

// SkipErased is the reason of a pending ledger row whose contact was erased.
const SkipErased SkipReason = "erased"

// SubjectDelivery is one ledger row about a contact, as a data subject's export shows it.
type SubjectDelivery struct {
	ID         int64
	CampaignID string
	ContactID  string
	Address    string
	Variant    string
	State      RecipientState
	Attempt    int
	ProviderID string
	Reason     string
	CreateTime time.Time
	UpdateTime time.Time
}

// SubjectErasure is an erasure's progress: what it erased and what remains.
type SubjectErasure struct {
	// Contacts deleted, ledger rows blanked so far.
	Contacts, Deliveries int64
	// Remaining counts contacts of the erased ids still present and ledger rows of them still
	// holding an address (in flight); 0 once verified.
	Remaining int64
}

// Done reports whether the erasure is complete and verified.
func (e SubjectErasure) Done() bool { return e.Remaining == 0 }

// SubjectStore is the port to what the data-subject requests need beyond the contacts.
type SubjectStore interface {
	// SubjectDeliveries calls fn with the tenant's ledger rows of the contacts, in id order.
	SubjectDeliveries(ctx context.Context, tenantID string, contactIDs []string, fn func(SubjectDelivery) error) error
	// EraseSubject deletes the contacts ids name, skips their pending ledger rows, blanks the
	// address of their settled rows, records the erased contact ids under the request (adding
	// to those of an earlier call) and returns the progress, in one transaction.
	EraseSubject(ctx context.Context, tenantID, request string, ids []Identifier) (SubjectErasure, error)
	// ContinueErasure blanks the rows of the request's contacts that settled since, and
	// returns the progress; NOT_FOUND for a request never started.
	ContinueErasure(ctx context.Context, tenantID, request string) (SubjectErasure, error)
}

// Subjects implements delivery's part of data-subject requests.
type Subjects struct {
	aud   *Audiences
	store SubjectStore
}

// NewSubjects returns the data-subject use cases over the audiences and store.
func NewSubjects(aud *Audiences, store SubjectStore) *Subjects {
	return &Subjects{aud: aud, store: store}
}

// MaxDSRRequestLen bounds a dsr request id.
const MaxDSRRequestLen = 128

func checkSubjectCall(tenantID, request string) error {
	var v apperr.Violations
	if tenantID == "" {
		v.Add("tenant_id", "is required")
	}
	if request == "" || len(request) > MaxDSRRequestLen || !printableText(request) {
		v.Add("dsr_request", "must be 1-%d printable characters", MaxDSRRequestLen)
	}
	return v.Err()
}

// Resolve returns the identifiers of the contacts ids name that are not among ids (a contact
// found by email links its user id, and the reverse).
func (s *Subjects) Resolve(ctx context.Context, tenantID, request string, ids []Identifier) ([]Identifier, error) {
	if err := checkSubjectCall(tenantID, request); err != nil || len(ids) == 0 {
		return nil, err
	}
	cs, err := s.aud.ExportContact(ctx, tenantID, ids)
	if err != nil {
		return nil, err
	}
	given, _ := normalizeIdentifiers(ids)
	seen := map[Identifier]bool{}
	for _, id := range given {
		seen[id] = true
	}
	var out []Identifier
	for _, c := range cs {
		for _, id := range []Identifier{{IdentifierUserID, c.UserID}, {IdentifierEmail, c.Email}, {IdentifierPhone, c.Phone}} {
			if id.Value != "" && !seen[id] && len(out) < MaxIdentifiers {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	return out, nil
}

// Export calls contact with every contact ids name, then delivery with each of their ledger
// rows.
func (s *Subjects) Export(ctx context.Context, tenantID, request string, ids []Identifier, contact func(Contact) error, delivery func(SubjectDelivery) error) error {
	if err := checkSubjectCall(tenantID, request); err != nil || len(ids) == 0 {
		return err
	}
	cs, err := s.aud.ExportContact(ctx, tenantID, ids)
	if err != nil || len(cs) == 0 {
		return err
	}
	contactIDs := make([]string, len(cs))
	for i, c := range cs {
		if err := contact(c); err != nil {
			return err
		}
		contactIDs[i] = c.ID
	}
	return s.store.SubjectDeliveries(ctx, tenantID, contactIDs, delivery)
}

// StartErasure erases what ids name (see SubjectStore.EraseSubject). Repeating it for the same
// request erases what appeared since and reports the progress.
func (s *Subjects) StartErasure(ctx context.Context, tenantID, request string, ids []Identifier) (SubjectErasure, error) {
	if err := checkSubjectCall(tenantID, request); err != nil {
		return SubjectErasure{}, err
	}
	if len(ids) > 0 { // none of the kinds delivery stores: the erasure is recorded, and done
		var err error
		if ids, err = normalizeIdentifiers(ids); err != nil {
			return SubjectErasure{}, err
		}
	}
	return s.store.EraseSubject(ctx, tenantID, request, ids)
}

// GetErasure continues and reports an erasure; NOT_FOUND for one never started.
func (s *Subjects) GetErasure(ctx context.Context, tenantID, request string) (SubjectErasure, error) {
	if err := checkSubjectCall(tenantID, request); err != nil {
		return SubjectErasure{}, err
	}
	return s.store.ContinueErasure(ctx, tenantID, request)
}
