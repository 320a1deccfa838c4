package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
)

// AuditEntry is a stored audit record: the record plus its place in its tenant's hash chain.
type AuditEntry struct {
	audit.Record
	// Outcome is the gRPC code name ("OK", "PERMISSION_DENIED").
	OutcomeName  string
	Sequence     int64
	PreviousHash string
	Hash         string
}

// Chain is the hash chain a record belongs to: its tenant, or "" for the platform.
func (e AuditEntry) Chain() string { return e.TenantID }

// ComputeHash is SHA-256 over the previous hash and every field of the record, in a fixed
// order with separators that cannot occur in the values' encoding.
func (e AuditEntry) ComputeHash() string {
	fields := []string{
		e.PreviousHash, strconv.FormatInt(e.Sequence, 10), e.ID, e.Time.UTC().Format(time.RFC3339Nano),
		e.TenantID, e.Actor, e.ActorKind, e.Method, e.Resource, e.OutcomeName,
		e.RequestID, e.TraceID, e.ClientAddress, e.Service,
	}
	h := sha256.New()
	for _, f := range fields {
		fmt.Fprintf(h, "%d:%s;", len(f), f)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// NewAuditEntry prepares a record for storage (hash fields are set by the store).
func NewAuditEntry(r audit.Record) AuditEntry {
	r.Time = r.Time.UTC().Truncate(time.Microsecond) // what PostgreSQL keeps
	return AuditEntry{Record: r, OutcomeName: audit.CodeName(r.Outcome)}
}

// maxAuditClockSkew is how far ahead of auth's clock a delivered record's time may be.
const maxAuditClockSkew = time.Minute

// MaxAuditBatch bounds AppendAuditRecords.
const MaxAuditBatch = 500

// takeAudit takes the audit record of the call in ctx (audit.Take) as a success on resource in
// tenantID, for the store to append to the tenant's chain in the transaction of the change: the
// record commits with the change or neither does, and the access layer does not record the call
// again. actor, when not empty, names the user the call acted as when its credential names
// nobody (a refresh, an accepted invitation). It returns nil outside audited work (the domain
// called directly, e.g. by a test or the bootstrap): the store then appends nothing.
//
// Call it right before the store call that makes the change, after every check that can
// refuse the call: a taken record is the call's only record once the call succeeds.
func takeAudit(ctx context.Context, tenantID, actor, resource string) *AuditEntry {
	r, ok := audit.Take(ctx, tenantID, resource)
	if !ok {
		return nil
	}
	if actor != "" {
		r.Actor = actor
		if r.ActorKind == "anonymous" {
			r.ActorKind = "user"
		}
	}
	e := NewAuditEntry(r)
	return &e
}

// AuditLog is the auth service's own audit sink: it appends to the audit store directly. It
// stores what the access layer records after a call: denials, failures, and successful calls
// that changed nothing (their changes' records are appended with the changes, see takeAudit).
type AuditLog struct {
	Store  Store
	Logger *slog.Logger
}

// Record implements audit.Sink: the record is in the chain when it returns.
func (a AuditLog) Record(ctx context.Context, r audit.Record) error {
	if _, _, err := a.Store.AppendAudit(ctx, []AuditEntry{NewAuditEntry(r)}); err != nil {
		return fmt.Errorf("append audit record: %w", err)
	}
	return nil
}

// AuditFilter selects audit records; zero fields match everything.
type AuditFilter struct {
	Start, End                       time.Time
	Actor, Method, Resource, Outcome string
	AfterSequence                    int64
	Limit                            int
}

// AppendAuditRecords stores records sent by the mesh service caller (its verified identity).
// Every record needs an id. The chain must not hold what the caller could not have recorded: a
// record's service is the caller, whatever it says; its method must be one of the caller's
// own (an RPC of package campaignmesh.<caller>.v… or "<caller>.<job>"); its tenant must exist;
// and its actor must fit its kind — an existing user or API key of that tenant, the caller
// itself as "service:<caller>", or nobody for anonymous calls. One record that does not hold
// refuses the whole call, so a peer forging records is stopped, not half-believed.
func (s *Service) AppendAuditRecords(ctx context.Context, caller string, recs []AuditEntry) (int, int, error) {
	var v apperr.Violations
	if len(recs) > MaxAuditBatch {
		v.Add("records", "at most %d records per call", MaxAuditBatch)
	}
	for i, r := range recs {
		if ValidateID("id", r.ID) != nil {
			v.Add(fmt.Sprintf("records[%d].id", i), "must be a UUID")
		}
		if r.Method == "" || r.Time.IsZero() {
			v.Add(fmt.Sprintf("records[%d]", i), "needs a method and a time")
		}
	}
	if err := v.Err(); err != nil {
		return 0, 0, err
	}
	seen := map[string]bool{} // tenant/kind/actor already checked in this call
	for i := range recs {
		recs[i].Service = caller
		var refused refusal
		switch err := s.checkForeignRecord(ctx, caller, recs[i].Record, seen); {
		case errors.As(err, &refused):
			return 0, 0, apperr.New(apperr.PermissionDenied, "AUDIT_RECORD_REFUSED", "records[%d]: %s", i, string(refused))
		case err != nil:
			return 0, 0, err
		}
	}
	return s.store.AppendAudit(ctx, recs)
}

// refusal is why a record cannot come from its caller; other errors are the store's.
type refusal string

func (r refusal) Error() string { return string(r) }

// checkForeignRecord says why r cannot come from caller (a refusal), or returns nil.
func (s *Service) checkForeignRecord(ctx context.Context, caller string, r audit.Record, seen map[string]bool) error {
	if !strings.HasPrefix(r.Method, "/campaignmesh."+caller+".v") && !strings.HasPrefix(r.Method, caller+".") {
		return refusal(fmt.Sprintf("method %q is not served by %s", r.Method, caller))
	}
	if r.Time.After(s.now().Add(maxAuditClockSkew)) {
		return refusal("record time lies in the future") // records wait in outboxes: late is normal, early is not
	}
	key := r.TenantID + "/" + r.ActorKind + "/" + r.Actor
	if seen[key] {
		return nil
	}
	if r.TenantID != "" {
		if ValidateID("tenant_id", r.TenantID) != nil {
			return refusal("tenant is not a tenant id")
		}
		if _, err := s.store.GetTenant(ctx, r.TenantID); err != nil {
			return errorUnlessNotFound(err, "tenant does not exist")
		}
	}
	switch r.ActorKind {
	case "anonymous":
		if r.Actor != "" {
			return refusal("an anonymous record names an actor")
		}
	case "service":
		if r.Actor != "service:"+caller {
			return refusal(fmt.Sprintf("a service record of %s must name actor service:%s", caller, caller))
		}
	case string(authn.KindAccessToken), "user":
		if ValidateID("actor", r.Actor) != nil {
			return refusal("actor is not a user id")
		}
		if _, err := s.store.GetUser(ctx, r.TenantID, r.Actor); err != nil {
			return errorUnlessNotFound(err, "actor is not a user of the record's tenant")
		}
	case string(authn.KindAPIKey):
		if r.TenantID == "" || ValidateID("actor", r.Actor) != nil {
			return refusal("actor is not an API key of a tenant")
		}
		if _, err := s.store.GetAPIKey(ctx, r.TenantID, r.Actor); err != nil {
			return errorUnlessNotFound(err, "actor is not an API key of the record's tenant")
		}
	default:
		return refusal(fmt.Sprintf("unknown actor kind %q", r.ActorKind))
	}
	seen[key] = true
	return nil
}

// errorUnlessNotFound turns a not-found lookup into the refusal msg; other errors (the store
// failing) stay what they are, so they answer INTERNAL rather than a false refusal.
func errorUnlessNotFound(err error, msg string) error {
	if apperr.HasCode(err, apperr.NotFound) {
		return refusal(msg)
	}
	return err
}

// ListAuditRecords returns one page of the caller's chain, oldest first, and the next token.
func (s *Service) ListAuditRecords(ctx context.Context, caller *authn.Principal, f AuditFilter, pageSize int32, token string) ([]AuditEntry, string, error) {
	var v apperr.Violations
	switch {
	case pageSize < 0:
		v.Add("page_size", "must not be negative")
	case pageSize == 0:
		f.Limit = DefaultPageSize
	default:
		f.Limit = min(int(pageSize), MaxPageSize)
	}
	if token != "" {
		n, err := strconv.ParseInt(token, 10, 64)
		if err != nil || n < 1 {
			v.Add("page_token", "is not a token from a previous page")
		}
		f.AfterSequence = n
	}
	if !f.Start.IsZero() && !f.End.IsZero() && !f.End.After(f.Start) {
		v.Add("end_time", "must be after start_time")
	}
	if err := v.Err(); err != nil {
		return nil, "", err
	}
	es, err := s.store.ListAudit(ctx, caller.TenantID, f)
	if err != nil || len(es) < f.Limit {
		return es, "", err
	}
	return es, strconv.FormatInt(es[len(es)-1].Sequence, 10), nil
}

// ChainCheck is the result of verifying a chain.
type ChainCheck struct {
	OK                  bool
	Checked             int64
	FirstBrokenSequence int64
	Reason              string
}

// VerifyAuditChain recomputes the caller's chain from the start and reports the first record
// whose sequence, link or hash does not hold.
func (s *Service) VerifyAuditChain(ctx context.Context, caller *authn.Principal) (ChainCheck, error) {
	var check ChainCheck
	prevHash, after := "", int64(0)
	for {
		es, err := s.store.ListAudit(ctx, caller.TenantID, AuditFilter{AfterSequence: after, Limit: 1000})
		if err != nil {
			return ChainCheck{}, err
		}
		for _, e := range es {
			switch {
			case e.Sequence != after+1:
				return broken(check, after+1, fmt.Sprintf("record %d is missing", after+1)), nil
			case e.PreviousHash != prevHash:
				return broken(check, e.Sequence, "does not link to the previous record"), nil
			case e.ComputeHash() != e.Hash:
				return broken(check, e.Sequence, "content does not match its hash"), nil
			}
			check.Checked++
			prevHash, after = e.Hash, e.Sequence
		}
		if len(es) < 1000 {
			check.OK = true
			return check, nil
		}
	}
}

func broken(c ChainCheck, seq int64, reason string) ChainCheck {
	c.FirstBrokenSequence, c.Reason = seq, reason
	return c
}
