package delivery

import "context"

// Suppressions is the port to the platform's suppression list (dsr's "suppress" requests and
// erasures, kept by dsr in the privacy bucket): a subject on it is never sent to, whatever
// the contact's consent, as ingest drops its events. A contact is on it when its user id or
// its email address is.
type Suppressions interface {
	// SuppressedContact reports whether the tenant's suppression list holds c's user id or
	// email address.
	SuppressedContact(ctx context.Context, tenantID string, c Contact) (bool, error)
}

// WithSuppressions makes eligibility checks and counts honour the platform's suppression list.
func (a *Audiences) WithSuppressions(s Suppressions) *Audiences { a.suppressions = s; return a }

// EligibleNow is Eligible, and not on the platform's suppression list: what the sender's
// recipient resolver checks right before a send.
func (a *Audiences) EligibleNow(ctx context.Context, tenantID string, c Contact, ch Channel) (bool, SkipReason, error) {
	if ok, why := Eligible(c, ch); !ok {
		return false, why, nil
	}
	if a.suppressions != nil {
		on, err := a.suppressions.SuppressedContact(ctx, tenantID, c)
		if err != nil {
			return false, "", err
		}
		if on {
			return false, SkipSuppressed, nil
		}
	}
	return true, "", nil
}
