package delivery

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// RecipientState is where one recipient of a campaign stands in the delivery ledger.
//
//	pending → sending (claimed: lease owner, lease expiry, attempt+1) → sent | failed | pending (retry) | unknown
//	unknown → sent (found at the provider) | pending (not found after the settle time)
//	skipped is set when recipients are resolved (no consent, suppressed, no address).
type RecipientState string

// The ledger states.
const (
	// StatePending: not sent yet; eligible from NotBefore on.
	StatePending RecipientState = "pending"
	// StateSending: claimed by a sender whose provider call is (or was) in flight.
	StateSending RecipientState = "sending"
	// StateSent: the provider accepted the message (ProviderID says which).
	StateSent RecipientState = "sent"
	// StateFailed: the provider refused the message for good (Reason says why).
	StateFailed RecipientState = "failed"
	// StateSkipped: never to be sent (Reason says why).
	StateSkipped RecipientState = "skipped"
	// StateUnknown: the request may have been processed (5xx, timeout after sending, a sender
	// that died mid-call); only the provider's lookup may settle it.
	StateUnknown RecipientState = "unknown"
)

// Terminal reports whether a row in state s is finished.
func (s RecipientState) Terminal() bool {
	return s == StateSent || s == StateFailed || s == StateSkipped
}

// Recipient is one row of the ledger: one (tenant, campaign, contact), its variant fixed at
// insert, and its delivery progress. Its ID is the opaque reference given to the provider
// (SendGrid custom_args, a Twilio body marker): it carries no personal data.
type Recipient struct {
	ID         string
	TenantID   string
	CampaignID string
	ContactID  string
	// Address is the email address or E.164 number, copied when the recipient is resolved
	// so the send does not depend on the contact still being readable (dsr erasure blanks it).
	Address string
	Variant string
	State   RecipientState
	// Attempt counts claims: a write of an outcome names the attempt it finishes, so a stale
	// owner's late answer cannot overwrite a newer attempt.
	Attempt     int
	NotBefore   time.Time
	LeaseOwner  string
	LeaseExpiry time.Time
	// AttemptTime is when the last attempt was claimed: a lookup searches from it, and a row
	// may be declared not-sent only a settle time after it.
	AttemptTime time.Time
	ProviderID  string
	Reason      string
}

// NewRecipient is a contact to add to a campaign's ledger.
type NewRecipient struct {
	ContactID, Address string
	// NotBefore is the earliest send time (quiet hours, send-at-local-time); zero: now.
	NotBefore time.Time
	// Skip, when set, adds the row as skipped with this reason (no consent, suppressed).
	Skip string
}

// Claim asks for up to Limit due pending rows of one campaign, leased to Owner until
// Now+Lease.
type Claim struct {
	TenantID, CampaignID string
	Owner                string
	Limit                int
	Now                  time.Time
	Lease                time.Duration
}

// Outcome is the result of one attempt, written by the attempt's lease owner right after the
// provider answered (or the sender gave the row back without calling).
type Outcome struct {
	ID, Owner string
	Attempt   int
	// State is sent, failed, pending (retry later, or given back uncalled) or unknown.
	State      RecipientState
	ProviderID string
	Reason     string
	// NotBefore is the retry time of a pending outcome.
	NotBefore time.Time
	// Release, for a pending outcome, gives the attempt back (the provider was not called):
	// the attempt counter is restored so it counts provider calls only.
	Release bool
	Now     time.Time
}

// Resolution settles an unknown row after a lookup, conditional on the row still being
// unknown at Attempt.
type Resolution struct {
	ID         string
	Attempt    int
	State      RecipientState // sent or pending
	ProviderID string
	Reason     string
	Now        time.Time
}

// LedgerStore is the ledger's storage. Every write that finishes an attempt is conditional
// (the row is still in the state and attempt the writer saw, and for a sending row the
// writer is its lease owner), so two senders can never both finish one row.
type LedgerStore interface {
	// AddRecipients inserts one pending (or skipped) row per contact, assigning each its
	// variant; a contact already in the campaign's ledger is left as it is. It returns how
	// many rows were new.
	AddRecipients(ctx context.Context, tenantID, campaignID string, variants []Variant, rs []NewRecipient) (int, error)
	// ClaimPending moves up to c.Limit due pending rows to sending, leased to c.Owner, and
	// returns them. Rows locked by another claimer are skipped, not waited for.
	ClaimPending(ctx context.Context, c Claim) ([]Recipient, error)
	// Record writes an attempt's outcome if the row is still sending under o.Owner at
	// o.Attempt; false means another sender took the row over (the lease expired).
	Record(ctx context.Context, o Outcome) (bool, error)
	// ExpireLeases moves the campaign's sending rows whose lease ended before now to
	// unknown: their sender died or stalled mid-call, so they may have been sent.
	ExpireLeases(ctx context.Context, tenantID, campaignID string, now time.Time) (int, error)
	// ClaimUnknown returns up to limit unknown rows due for a lookup and pushes their next
	// lookup to now+recheck, so concurrent reconcilers do not look up the same rows.
	ClaimUnknown(ctx context.Context, tenantID, campaignID string, now time.Time, recheck time.Duration, limit int) ([]Recipient, error)
	// Resolve settles an unknown row if it is still unknown at r.Attempt.
	Resolve(ctx context.Context, r Resolution) (bool, error)
	// Counts returns the number of rows per state (and per variant in byVariant).
	Counts(ctx context.Context, tenantID, campaignID string) (Counts, error)
	// Unfinished reports whether the campaign has a row pending, sending or unknown — or,
	// with settlingOnly, a row sending or unknown: the sender's cheap "done?".
	Unfinished(ctx context.Context, tenantID, campaignID string, settlingOnly bool) (bool, error)
}

// Counts is a campaign's ledger totals.
type Counts struct {
	ByState   map[RecipientState]int
	ByVariant map[string]map[RecipientState]int
}

// Open is how many rows are not finished yet (pending, sending or unknown).
func (c Counts) Open() int {
	return c.ByState[StatePending] + c.ByState[StateSending] + c.ByState[StateUnknown]
}

// Message is what a Provider sends to one recipient.
type Message struct {
	// Ref is the ledger row's id: the only reference given to the provider, and what Lookup
	// finds the message by.
	Ref                           string
	TenantID, CampaignID, Variant string
	// To is the email address or E.164 number.
	To string
	// Subject is the email subject (unused for SMS).
	Subject string
	// Text is the plain-text body (the SMS body); HTML the email's HTML body.
	Text, HTML string
	// Headers are extra email headers (List-Unsubscribe is set by the provider adapter
	// from ListUnsubscribeURL).
	Headers            map[string]string
	ListUnsubscribeURL string
	// From is the tenant's sender identity (set by Compose); its zero value leaves the
	// provider adapter's configured sender.
	From MessageFrom
}

// MessageFrom is who a message is from: an email's address, display name and reply-to, or an
// SMS's Twilio messaging service or number. Empty fields keep the adapter's configuration.
type MessageFrom struct {
	Email, Name, ReplyTo        string
	Number, MessagingServiceSID string
}

// LookupRef is what Lookup searches by: the row's reference, its recipient, and when the
// attempt started (providers index messages by day or time).
type LookupRef struct {
	Ref   string
	To    string
	Since time.Time
}

// Provider sends one message and looks one up. Neither SendGrid nor Twilio takes an
// idempotency key, so Send's error must say what the provider may have done (a *SendError;
// any other error counts as maybe processed), and Lookup is the only way to learn whether a
// maybe-processed message exists.
type Provider interface {
	// Send hands m to the provider and returns the provider's message id.
	Send(ctx context.Context, m Message) (providerID string, err error)
	// Lookup reports whether the provider holds a message carrying ref.Ref. found=false with
	// a nil error is a definite "not (yet) there": the sender trusts it only a settle time
	// after the attempt, as providers index messages with some delay.
	Lookup(ctx context.Context, ref LookupRef) (found bool, providerID string, err error)
}

// FailureClass says what a failed send may have done at the provider.
type FailureClass int

const (
	// NotProcessedRetryable: certainly not processed, and worth retrying (429, Twilio
	// 20429, a connection that failed before the request was written).
	NotProcessedRetryable FailureClass = iota + 1
	// NotProcessedPermanent: certainly not processed, and the same request would fail again
	// (validation, invalid number, authentication).
	NotProcessedPermanent
	// MaybeProcessed: the request left and no clear answer came back (5xx, a timeout after
	// the request was written); the message may exist.
	MaybeProcessed
)

// String names the class for logs and reasons.
func (c FailureClass) String() string {
	switch c {
	case NotProcessedRetryable:
		return "not processed, retryable"
	case NotProcessedPermanent:
		return "not processed, permanent"
	case MaybeProcessed:
		return "maybe processed"
	}
	return "unclassified"
}

// SendError is a classified provider failure.
type SendError struct {
	Class FailureClass
	// RetryAfter is how long the provider asked to wait (0: it did not say).
	RetryAfter time.Duration
	// Reason is a short text for the ledger row (no personal data, no credentials).
	Reason string
	Err    error
}

// Error describes the failure.
func (e *SendError) Error() string {
	s := e.Class.String()
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the provider client's error.
func (e *SendError) Unwrap() error { return e.Err }

// Classify returns the class of a Send error: a *SendError's own, and MaybeProcessed for any
// other error, because nothing else proves the provider did not act.
func Classify(err error) (FailureClass, *SendError) {
	var se *SendError
	if errors.As(err, &se) && se.Class != 0 {
		return se.Class, se
	}
	return MaybeProcessed, &SendError{Class: MaybeProcessed, Reason: "unclassified error", Err: err}
}

// CampaignStatus is what the sender needs to know about a campaign to go on claiming.
type CampaignStatus struct {
	// Sendable is true while the campaign is active and within budget.
	Sendable bool
	// State names the campaign's state when it is not sendable (paused, cancelled,
	// budget_exhausted, completed…), for the stop reason.
	State string
}

// CampaignState is the sender's view of campaigns, the owner of a campaign's state: delivery
// follows it and never changes it.
type CampaignState interface {
	Status(ctx context.Context, tenantID, campaignID string) (CampaignStatus, error)
}

// ErrStopped is wrapped by the error Run returns when the campaign stopped being sendable.
var ErrStopped = errors.New("campaign stopped being sendable")

// StoppedError says why a Run stopped claiming.
type StoppedError struct{ State string }

func (e *StoppedError) Error() string {
	return fmt.Sprintf("campaign is %s: %v", e.State, ErrStopped)
}

// Unwrap makes errors.Is(err, ErrStopped) hold.
func (e *StoppedError) Unwrap() error { return ErrStopped }
