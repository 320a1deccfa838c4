package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

// limitJSON is one element of plans.limits (00001_usage.sql).
type limitJSON struct {
	Meter  string `json:"meter"`
	Limit  int64  `json:"limit"`
	Hard   bool   `json:"hard"`
	Period string `json:"period"`
}

const planCols = `tenant_id, name, limits, revision, update_time, updated_by`

func scanPlan(r pgx.CollectableRow) (billing.Plan, error) {
	var (
		p      billing.Plan
		limits []byte
	)
	if err := r.Scan(&p.TenantID, &p.Name, &limits, &p.Revision, &p.UpdateTime, &p.UpdatedBy); err != nil {
		return p, err
	}
	var ls []limitJSON
	if err := json.Unmarshal(limits, &ls); err != nil {
		return p, fmt.Errorf("decode limits of plan %s: %w", p.TenantID, err)
	}
	p.Limits = make([]billing.Limit, len(ls))
	for i, l := range ls {
		p.Limits[i] = billing.Limit{Meter: billing.Meter(l.Meter), Limit: l.Limit, Hard: l.Hard, Period: billing.Period(l.Period)}
	}
	p.UpdateTime = p.UpdateTime.UTC()
	return p, nil
}

// GetPlan returns tenantID's plan, or NOT_FOUND when it has none.
func (s *Store) GetPlan(ctx context.Context, tenantID string) (billing.Plan, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+planCols+` FROM plans WHERE tenant_id = $1`, tenantID)
	p, err := pgx.CollectExactlyOneRow(rows, scanPlan)
	if errors.Is(err, pgx.ErrNoRows) {
		return billing.Plan{}, apperr.NotFoundf("plan of tenant %s", tenantID)
	}
	if err != nil {
		return billing.Plan{}, fmt.Errorf("read plan: %w", err)
	}
	return p, nil
}

// Plans implements billing.MeteringStore.
func (s *Store) Plans(ctx context.Context) ([]billing.Plan, error) {
	return s.ListPlans(ctx, "", 0)
}

// ListPlans returns up to limit plans (0: all) of tenants after afterTenant, by tenant.
func (s *Store) ListPlans(ctx context.Context, afterTenant string, limit int) ([]billing.Plan, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+planCols+` FROM plans WHERE tenant_id > $1 ORDER BY tenant_id
		LIMIT CASE WHEN $2 > 0 THEN $2 END`, afterTenant, limit)
	ps, err := pgx.CollectRows(rows, scanPlan)
	if err != nil {
		return nil, fmt.Errorf("list plans: %w", err)
	}
	return ps, nil
}

// PutPlan creates or replaces p's tenant's plan and writes rec (when given) in the same
// transaction. With expectRevision > 0 the stored plan must be at that revision (ABORTED
// otherwise, NOT_FOUND when there is none); with 0 any plan is replaced. The stored plan, at its
// new revision, is returned.
func (s *Store) PutPlan(ctx context.Context, p billing.Plan, expectRevision int64, rec *audit.Record) (billing.Plan, error) {
	ls := make([]limitJSON, len(p.Limits))
	for i, l := range p.Limits {
		ls[i] = limitJSON{Meter: string(l.Meter), Limit: l.Limit, Hard: l.Hard, Period: string(l.Period)}
	}
	limits, err := json.Marshal(ls)
	if err != nil {
		return billing.Plan{}, fmt.Errorf("encode limits: %w", err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return billing.Plan{}, fmt.Errorf("write plan: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var rows pgx.Rows
	if expectRevision > 0 {
		rows, _ = tx.Query(ctx, `UPDATE plans SET name = $2, limits = $3, revision = revision + 1, update_time = clock_timestamp(), updated_by = $4
			WHERE tenant_id = $1 AND revision = $5 RETURNING `+planCols, p.TenantID, p.Name, limits, p.UpdatedBy, expectRevision)
	} else {
		rows, _ = tx.Query(ctx, `INSERT INTO plans (tenant_id, name, limits, updated_by) VALUES ($1, $2, $3, $4)
			ON CONFLICT (tenant_id) DO UPDATE SET name = excluded.name, limits = excluded.limits, revision = plans.revision + 1,
				update_time = clock_timestamp(), updated_by = excluded.updated_by
			RETURNING `+planCols, p.TenantID, p.Name, limits, p.UpdatedBy)
	}
	out, err := pgx.CollectExactlyOneRow(rows, scanPlan)
	if errors.Is(err, pgx.ErrNoRows) {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM plans WHERE tenant_id = $1)`, p.TenantID).Scan(&exists); err != nil {
			return billing.Plan{}, fmt.Errorf("write plan: %w", err)
		}
		if !exists {
			return billing.Plan{}, apperr.NotFoundf("plan of tenant %s", p.TenantID)
		}
		return billing.Plan{}, apperr.New(apperr.Conflict, "ETAG_MISMATCH", "plan of tenant %s changed since revision %d: read it again", p.TenantID, expectRevision)
	}
	if err != nil {
		return billing.Plan{}, fmt.Errorf("write plan: %w", err)
	}
	if rec != nil {
		if err := auditpg.InsertTx(ctx, tx, *rec); err != nil {
			return billing.Plan{}, fmt.Errorf("write plan: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return billing.Plan{}, fmt.Errorf("write plan: commit: %w", err)
	}
	return out, nil
}
