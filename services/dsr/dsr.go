// Package dsr is the data-subject request domain: requests (ACCESS, ERASURE, SUPPRESS,
// UNSUPPRESS) and their validation, the durable job that carries each through its participants
// (Runner), the suppression list, each tenant's privacy policy, and signed receipts. It is
// plain Go: it declares the ports it needs (Store, Participant, Publisher) and the adapters
// (postgres, participantclient, the PRIVACY bucket) implement them.
//
// # Durability of the job
//
// A request's row is the job's whole state: its state, each participant's status, the covered
// identifiers, and next_attempt. A runner claims due rows (FOR UPDATE SKIP LOCKED, pushing
// next_attempt past a lease) and performs one step of each; every step ends by writing the new
// row state in one transaction, conditional on the state it started from. Every participant
// call is idempotent per request (the ParticipantService contract), and export chunks of a
// participant are deleted before its export is (re)written, so a runner killed at any point
// leaves a row from which the next claim (after the lease) repeats at most the step in flight,
// with the same effects. A step never completes a request twice: the final write is
// conditional on the state being verifying.
package dsr

import (
	"context"
	"errors"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/services/dsr/receipt"
)

// Kind is what a request does.
type Kind string

// The kinds.
const (
	KindAccess     Kind = "access"
	KindErasure    Kind = "erasure"
	KindSuppress   Kind = "suppress"
	KindUnsuppress Kind = "unsuppress"
)

// Kinds lists every kind.
var Kinds = []Kind{KindAccess, KindErasure, KindSuppress, KindUnsuppress}

// Regulation is the law a request is made under.
type Regulation string

// The regulations.
const (
	GDPR Regulation = "gdpr"
	CCPA Regulation = "ccpa"
)

// State is a request's lifecycle state.
type State string

// The states.
const (
	Received    State = "received"
	Suppressing State = "suppressing"
	Running     State = "running"
	Verifying   State = "verifying"
	Completed   State = "completed"
	Failed      State = "failed"
	Cancelled   State = "cancelled"
)

// States lists every state; OpenStates those a runner works on.
var (
	States     = []State{Received, Suppressing, Running, Verifying, Completed, Failed, Cancelled}
	OpenStates = []State{Received, Suppressing, Running, Verifying}
)

// Open reports whether a request in s has not ended.
func (s State) Open() bool {
	return s == Received || s == Suppressing || s == Running || s == Verifying
}

// IDKind is what an identifier's value is.
type IDKind string

// The identifier kinds.
const (
	UserID      IDKind = "user_id"
	AnonymousID IDKind = "anonymous_id"
	Email       IDKind = "email"
)

// Identifier names a data subject.
type Identifier struct {
	Kind  IDKind `json:"kind"`
	Value string `json:"value"`
}

// Covered is an identifier a request acts on, with its hash; Linked when a participant found
// it (LinkedBy) rather than the requester naming it. Value is cleared when the request's data
// is purged.
type Covered struct {
	Identifier
	Hash     string `json:"hash"`
	Linked   bool   `json:"linked,omitempty"`
	LinkedBy string `json:"linked_by,omitempty"`
}

// PState is a participant's progress on the current step.
type PState string

// The participant states.
const (
	PPending  PState = "pending"
	PRunning  PState = "running"
	PRetrying PState = "retrying"
	PDone     PState = "done"
	PFailed   PState = "failed"
)

// ParticipantStatus is one participant's progress on a request.
type ParticipantStatus struct {
	Name     string `json:"name"`
	State    PState `json:"state"`
	Attempts int    `json:"attempts"`
	// Failures counts consecutive failed calls (the backoff's exponent); reset by a success.
	Failures    int              `json:"failures,omitempty"`
	LastError   string           `json:"last_error,omitempty"`
	NextAttempt *time.Time       `json:"next_attempt,omitempty"`
	Counts      map[string]int64 `json:"counts,omitempty"`
	// Started: StartErasure was answered for this request (then GetErasure polls).
	Started bool `json:"started,omitempty"`
	// Bytes is the size of an ACCESS export's records from this participant.
	Bytes      int64     `json:"bytes,omitempty"`
	UpdateTime time.Time `json:"update_time"`
}

// Extension is a request's one deadline extension.
type Extension struct {
	Days       int       `json:"days"`
	Reason     string    `json:"reason"`
	CreateTime time.Time `json:"create_time"`
	ExtendedBy string    `json:"extended_by"`
}

// Manifest describes an ACCESS request's export.
type Manifest struct {
	Records    map[string]int64 `json:"records"`
	Bytes      int64            `json:"bytes"`
	ExpireTime time.Time        `json:"expire_time"`
}

// Request is one data-subject request.
type Request struct {
	ID, TenantID  string
	Kind          Kind
	Regulation    Regulation
	State         State
	RequestID     string
	Subject       []Identifier
	Covered       []Covered
	Participants  []ParticipantStatus
	FailureReason string
	CreatedBy     string
	CreateTime    time.Time
	UpdateTime    time.Time
	Deadline      time.Time
	EndTime       *time.Time
	Extension     *Extension
	Export        *Manifest
	Receipt       *receipt.Receipt
	// NextAttempt is when a runner next works on it (open requests).
	NextAttempt time.Time
}

// Overdue reports whether the request is open past its deadline at now.
func (r Request) Overdue(now time.Time) bool { return r.State.Open() && now.After(r.Deadline) }

// Suppression is a suppressed identifier hash of a tenant and the request that added it.
type Suppression struct {
	TenantID   string
	Hash       string
	RequestID  string
	CreateTime time.Time
}

// Policy is a tenant's privacy policy as dsr stores and publishes it.
type Policy struct {
	privacy.Policy
	// UpdateTime is nil for the default policy.
	UpdateTime *time.Time
}

// ExportRecord is one record of an export.
type ExportRecord struct {
	Participant string `json:"-"`
	Type        string `json:"type"`
	// Data is the record as a JSON object.
	Data []byte `json:"data"`
}

// Chunk is a piece of an export: newline-delimited JSON records of one participant.
type Chunk struct {
	Participant string
	Seq         int
	Records     int
	Data        []byte
}

// ReceiptKey is a receipt signing key. The store keeps Private only sealed under a KEK.
type ReceiptKey struct {
	KID        string
	Public     []byte
	KEKID      string
	Sealed     []byte
	CreateTime time.Time
}

// Progress is what a runner's step stores: the request's new job state, written only while the
// request is still in Expect, with suppression rows added or removed in the same transaction.
type Progress struct {
	Request Request
	Expect  State
	// AddSuppressions are hashes the request now suppresses (its linked identifiers).
	AddSuppressions []string
	// RemoveSuppressions are hashes no longer suppressed by any request of the tenant.
	RemoveSuppressions []string
}

// ErrStale is returned by SaveProgress when the request left Expect meanwhile (cancelled).
var ErrStale = errors.New("request changed meanwhile")

// OpenStats are the figures of the open requests.
type OpenStats struct {
	Open, Overdue int
	// Oldest is the create time of the oldest open request (zero: none).
	Oldest  time.Time
	ByState map[State]int
}

// Store is what the domain needs from persistence. Every tenant-scoped call takes the tenant
// explicitly; a request of another tenant is reported as not found. Changes in audited work
// carry their audit record, written in the transaction of the change.
type Store interface {
	// CreateRequest stores r and a suppression row per hash in sups, with rec. When r has a
	// RequestID that the tenant already used, it stores nothing and returns the first request
	// with created false.
	CreateRequest(ctx context.Context, r Request, sups []string, rec *audit.Record) (out Request, created bool, err error)
	GetRequest(ctx context.Context, tenantID, id string) (Request, error)
	ListRequests(ctx context.Context, tenantID string, q ListQuery) ([]Request, error)
	// UpdateRequest locks the request, lets change modify it, and stores it with rec and the
	// suppression rows change says to remove (this request's rows; nil: none), atomically.
	UpdateRequest(ctx context.Context, tenantID, id string, change func(r *Request) (removeOwn bool, rec *audit.Record, err error)) (Request, []string, error)

	// ClaimDue claims up to limit open requests of any tenant whose next attempt is due at now,
	// skipping rows another runner holds, and pushes their next attempt to now+lease, noting
	// runner as the claimer.
	ClaimDue(ctx context.Context, runner string, now time.Time, lease time.Duration, limit int) ([]Request, error)
	// ReleaseClaims makes the open requests runner claimed due at now: a runner starting
	// again under its identity takes back what its previous incarnation held.
	ReleaseClaims(ctx context.Context, runner string, now time.Time) (int, error)
	// SaveProgress stores p (see Progress); ErrStale when the request is no longer in Expect.
	SaveProgress(ctx context.Context, p Progress) error
	// Release makes a claimed request due at once (a runner stopping).
	Release(ctx context.Context, id string, at time.Time) error

	// RequestSuppressions lists the hashes a request's suppression rows hold.
	RequestSuppressions(ctx context.Context, tenantID, requestID string) ([]string, error)
	// Unheld returns those of hashes that no suppression row of the tenant holds any more.
	Unheld(ctx context.Context, tenantID string, hashes []string) ([]string, error)
	ListSuppressions(ctx context.Context, tenantID string, size int, after *Suppression) ([]Suppression, error)
	GetSuppression(ctx context.Context, tenantID, hash string) (Suppression, error)
	// EachSuppression calls fn for every suppressed hash of every tenant.
	EachSuppression(ctx context.Context, fn func(Suppression) error) error
	// Suppressed reports whether the tenant suppresses hash.
	Suppressed(ctx context.Context, tenantID, hash string) (bool, error)

	// DeleteExportChunks deletes a participant's chunks of a request.
	DeleteExportChunks(ctx context.Context, requestID, participant string) error
	// AppendExportChunk stores a chunk while the request is running (ErrStale otherwise).
	AppendExportChunk(ctx context.Context, requestID string, c Chunk) error
	// NextExportChunk returns the chunk after (participant, seq) in (participant, seq) order;
	// false after the last.
	NextExportChunk(ctx context.Context, requestID, participant string, seq int) (Chunk, bool, error)

	GetPolicy(ctx context.Context, tenantID string) (Policy, error)
	// UpdatePolicy locks the tenant's policy (the default one when none is stored), lets
	// change modify it, and stores it with the next version and rec.
	UpdatePolicy(ctx context.Context, tenantID string, change func(p *Policy) (*audit.Record, error)) (Policy, error)
	// EachPolicy calls fn for every stored policy.
	EachPolicy(ctx context.Context, fn func(tenantID string, p Policy) error) error

	ReceiptKeys(ctx context.Context) ([]ReceiptKey, error)
	// InsertReceiptKey stores a key unless one exists (a replica won the race).
	InsertReceiptKey(ctx context.Context, k ReceiptKey) error
	// ResealReceiptKey replaces the sealed private key of kid still under oldKEK.
	ResealReceiptKey(ctx context.Context, kid, oldKEK, newKEK string, sealed []byte) error

	// PurgeExports deletes the chunks of requests that ended before before and marks their
	// export gone; PurgeIdentifiers clears the raw identifier values of those requests.
	PurgeExports(ctx context.Context, before time.Time) (int, error)
	PurgeIdentifiers(ctx context.Context, before time.Time) (int, error)
	Stats(ctx context.Context, now time.Time) (OpenStats, error)
}

// Publisher is the PRIVACY bucket that ingest and analytics follow (privacy.Bucket).
type Publisher interface {
	PutSuppression(ctx context.Context, tenantID, hash, requestID string) error
	DeleteSuppression(ctx context.Context, tenantID, hash string) error
	PutPolicy(ctx context.Context, tenantID string, p privacy.Policy) error
	// SuppressionKeys calls fn for every suppression in the bucket.
	SuppressionKeys(ctx context.Context, fn func(tenantID, hash string)) error
}

// ErasureStatus is a participant's answer about an erasure.
type ErasureStatus struct {
	Done      bool
	Counts    map[string]int64
	Remaining int64
}

// Participant is a service that holds subject data (the ParticipantService contract). Every
// call is idempotent per request. Errors are *CallError when the participant answered or could
// not be reached.
type Participant interface {
	Name() string
	Resolve(ctx context.Context, tenantID, requestID string, ids []Identifier) ([]Identifier, error)
	// Export calls emit for every record; a failed stream returns an error.
	Export(ctx context.Context, tenantID, requestID string, ids []Identifier, emit func(typ string, data []byte) error) error
	StartErasure(ctx context.Context, tenantID, requestID string, ids []Identifier) (ErasureStatus, error)
	GetErasure(ctx context.Context, tenantID, requestID string) (ErasureStatus, error)
}

// CallError is a participant call's failure: Code is the gRPC status code's name (e.g.
// "UNAVAILABLE"). Permanent failures (INVALID_ARGUMENT, FAILED_PRECONDITION) fail the request;
// NotFound answers GetErasure for an erasure the participant does not know (start it again);
// any other is retried with backoff.
type CallError struct {
	Code string
	Err  error
}

func (e *CallError) Error() string { return e.Code + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *CallError) Unwrap() error { return e.Err }

// Permanent reports whether the participant refused for good.
func (e *CallError) Permanent() bool {
	return e.Code == "INVALID_ARGUMENT" || e.Code == "FAILED_PRECONDITION"
}

// callCode returns the code of a participant error ("UNKNOWN" when it has none).
func callCode(err error) string {
	var ce *CallError
	if errors.As(err, &ce) {
		return ce.Code
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "DEADLINE_EXCEEDED"
	}
	return "UNKNOWN"
}
