package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/campaignmesh/campaignmesh/services/auth"
)

// Audit chains. Each chain is extended under a transaction-scoped advisory lock on the chain,
// so concurrent appenders (several auth replicas, the access layer's sink and the stores'
// changes) serialise per tenant and sequences stay gapless.
//
// Lock order, which keeps appenders free of deadlocks: a transaction takes chain locks only
// after every row lock of its change (appendAudit is its last statement), several chains in
// the order of their names, and while holding one it waits for no row of another table. So a
// transaction holding a chain lock never waits for one that waits for that chain.

// AppendAudit implements auth.Store.
func (s *Store) AppendAudit(ctx context.Context, recs []auth.AuditEntry) (int, int, error) {
	appended, dups := 0, 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		appended, dups, err = appendAudit(ctx, tx, recs...)
		return err
	})
	return appended, dups, err
}

// appendRecord appends rec, when not nil, to its chain in tx: the audit record of the change tx
// makes. Call it last in the transaction (see the lock order above).
func appendRecord(ctx context.Context, tx pgx.Tx, rec *auth.AuditEntry) error {
	if rec == nil {
		return nil
	}
	_, _, err := appendAudit(ctx, tx, *rec)
	return err
}

// appendAudit appends recs to their chains in tx, skipping ids already stored, and returns how
// many it appended and skipped.
func appendAudit(ctx context.Context, tx pgx.Tx, recs ...auth.AuditEntry) (appended, dups int, err error) {
	sorted := slices.Clone(recs)
	slices.SortStableFunc(sorted, func(a, b auth.AuditEntry) int { return strings.Compare(a.Chain(), b.Chain()) })
	locked := map[string]bool{}
	for _, r := range sorted {
		chain := r.Chain()
		if !locked[chain] {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('audit:' || $1, 0))`, chain); err != nil {
				return 0, 0, fmt.Errorf("lock audit chain: %w", err)
			}
			locked[chain] = true
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM audit_records WHERE id = $1)`, r.ID).Scan(&exists); err != nil {
			return 0, 0, fmt.Errorf("check audit record: %w", err)
		}
		if exists {
			dups++
			continue
		}
		r.Sequence, r.PreviousHash = 1, ""
		err := tx.QueryRow(ctx, `SELECT sequence + 1, hash FROM audit_records WHERE chain = $1 ORDER BY sequence DESC LIMIT 1`, chain).
			Scan(&r.Sequence, &r.PreviousHash)
		if err != nil && err != pgx.ErrNoRows {
			return 0, 0, fmt.Errorf("read audit chain head: %w", err)
		}
		r.Hash = r.ComputeHash()
		if _, err := tx.Exec(ctx, `INSERT INTO audit_records (chain, sequence, id, time, tenant_id, actor, actor_kind, method,
			resource, outcome, request_id, trace_id, client_address, service, previous_hash, hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
			chain, r.Sequence, r.ID, r.Time, r.TenantID, r.Actor, r.ActorKind, r.Method, r.Resource, r.OutcomeName,
			r.RequestID, r.TraceID, r.ClientAddress, r.Service, r.PreviousHash, r.Hash); err != nil {
			return 0, 0, fmt.Errorf("append audit record: %w", err)
		}
		appended++
	}
	return appended, dups, nil
}

// ListAudit implements auth.Store.
func (s *Store) ListAudit(ctx context.Context, chain string, f auth.AuditFilter) ([]auth.AuditEntry, error) {
	q := `SELECT sequence, id::text, time, tenant_id, actor, actor_kind, method, resource, outcome, request_id, trace_id,
		client_address, service, previous_hash, hash FROM audit_records WHERE chain = $1 AND sequence > $2`
	args := []any{chain, f.AfterSequence}
	add := func(cond string, v any) {
		args = append(args, v)
		q += fmt.Sprintf(" AND %s $%d", cond, len(args))
	}
	if !f.Start.IsZero() {
		add("time >=", f.Start)
	}
	if !f.End.IsZero() {
		add("time <", f.End)
	}
	for col, v := range map[string]string{"actor": f.Actor, "method": f.Method, "resource": f.Resource, "outcome": f.Outcome} {
		if v != "" {
			add(col+" =", v)
		}
	}
	args = append(args, f.Limit)
	q += fmt.Sprintf(" ORDER BY sequence LIMIT $%d", len(args))
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit records: %w", err)
	}
	es, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (auth.AuditEntry, error) {
		var e auth.AuditEntry
		err := row.Scan(&e.Sequence, &e.ID, &e.Time, &e.TenantID, &e.Actor, &e.ActorKind, &e.Method, &e.Resource, &e.OutcomeName,
			&e.RequestID, &e.TraceID, &e.ClientAddress, &e.Service, &e.PreviousHash, &e.Hash)
		e.Time = e.Time.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("list audit records: %w", err)
	}
	return es, nil
}
