package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/access"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/auditlog"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
)

// AuditEntry is a stored audit record: the record plus its place in its tenant's hash chain.
type AuditEntry struct {
	access.AuditRecord
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
func NewAuditEntry(r access.AuditRecord) AuditEntry {
	r.Time = r.Time.UTC().Truncate(time.Microsecond) // what PostgreSQL keeps
	return AuditEntry{AuditRecord: r, OutcomeName: auditlog.CodeName(r.Outcome)}
}

// MaxAuditBatch bounds AppendAuditRecords.
const MaxAuditBatch = 500

// AuditLog is the auth service's own Auditor: it appends to the audit store directly.
type AuditLog struct {
	Store  Store
	Logger *slog.Logger
}

// Record implements access.Auditor. A record that cannot be stored is logged in full (records
// hold no secrets) so that nothing disappears silently.
func (a AuditLog) Record(ctx context.Context, r access.AuditRecord) {
	if _, _, err := a.Store.AppendAudit(context.WithoutCancel(ctx), []AuditEntry{NewAuditEntry(r)}); err != nil {
		a.Logger.ErrorContext(ctx, "store audit record", "err", err, "id", r.ID, "method", r.Method,
			"tenant_id", r.TenantID, "actor", r.Actor, "outcome", r.Outcome.String())
	}
}

// AuditFilter selects audit records; zero fields match everything.
type AuditFilter struct {
	Start, End                       time.Time
	Actor, Method, Resource, Outcome string
	AfterSequence                    int64
	Limit                            int
}

// AppendAuditRecords stores records sent by another service. Every record needs an id.
func (s *Service) AppendAuditRecords(ctx context.Context, recs []AuditEntry) (int, int, error) {
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
	return s.store.AppendAudit(ctx, recs)
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
