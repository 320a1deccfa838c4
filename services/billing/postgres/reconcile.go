package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

var _ billing.ReconcileStore = (*Store)(nil)

// ReconcileInputs returns every usage row of the days [start, end] (of tenant, or every
// tenant when ""), with the acked total, the state of its reports and the tenant's customer.
func (s *Store) ReconcileInputs(ctx context.Context, start, end time.Time, tenant string) ([]billing.ReconcileInput, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT u.day, u.tenant_id, u.meter, u.value, coalesce(r.reported, 0), coalesce(a.stripe_customer_id, ''),
		       coalesce(r.pending, false), coalesce(r.rejected, false), coalesce(r.too_old, false)
		FROM usage u
		LEFT JOIN billing_accounts a ON a.tenant_id = u.tenant_id
		LEFT JOIN LATERAL (
			SELECT max(to_value) FILTER (WHERE status = 'acked') AS reported,
			       bool_or(status = 'pending') AS pending,
			       bool_or(status = 'rejected') AS rejected,
			       bool_or(status = 'too_old') AS too_old
			FROM meter_reports m
			WHERE m.tenant_id = u.tenant_id AND m.meter = u.meter AND m.day = u.day
		) r ON true
		WHERE u.day BETWEEN $1::date AND $2::date AND ($3 = '' OR u.tenant_id = $3)
		ORDER BY u.day, u.tenant_id, u.meter`,
		start.UTC().Format(time.DateOnly), end.UTC().Format(time.DateOnly), tenant)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("query reconciliation inputs: %w", err))
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (billing.ReconcileInput, error) {
		var in billing.ReconcileInput
		var meter string
		err := row.Scan(&in.Day, &in.TenantID, &meter, &in.Ours, &in.Reported, &in.CustomerID, &in.Pending, &in.Rejected, &in.TooOld)
		in.Meter, in.Day = billing.Meter(meter), in.Day.UTC()
		return in, err
	})
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("read reconciliation inputs: %w", err))
	}
	return out, nil
}

// SaveReconciliations stores rows, replacing those of the same day, tenant and meter.
func (s *Store) SaveReconciliations(ctx context.Context, rows []billing.Reconciliation) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, r := range rows {
			if _, err := tx.Exec(ctx, `
				INSERT INTO reconciliations (day, tenant_id, meter, ours, reported, stripe, difference, explanation)
				VALUES ($1::date, $2, $3, $4, $5, $6, $7, $8)
				ON CONFLICT (day, tenant_id, meter) DO UPDATE SET ours = EXCLUDED.ours, reported = EXCLUDED.reported,
					stripe = EXCLUDED.stripe, difference = EXCLUDED.difference, explanation = EXCLUDED.explanation,
					create_time = clock_timestamp()`,
				r.Day.UTC().Format(time.DateOnly), r.TenantID, string(r.Meter), r.Ours, r.Reported, r.Stripe, r.Difference, r.Explanation); err != nil {
				return fmt.Errorf("store reconciliation: %w", err)
			}
		}
		return nil
	})
	return pgdb.Classify(err)
}

// ReconciliationKey is a stored row's position in the listing order (a page token).
func ReconciliationKey(r billing.Reconciliation) string {
	return r.Day.UTC().Format(time.DateOnly) + "|" + r.TenantID + "|" + string(r.Meter)
}

// ListReconciliations returns the stored rows of [start, end] (of tenant, or all) that come
// after the key `after` in (day, tenant, meter) order, at most limit.
func (s *Store) ListReconciliations(ctx context.Context, start, end time.Time, tenant, after string, limit int) ([]billing.Reconciliation, error) {
	aDay, aTenant, aMeter := "0001-01-01", "", ""
	if after != "" {
		parts := strings.SplitN(after, "|", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("bad page key")
		}
		aDay, aTenant, aMeter = parts[0], parts[1], parts[2]
	}
	rows, err := s.pool.Query(ctx, `
		SELECT day, tenant_id, meter, ours, reported, stripe, difference, explanation
		FROM reconciliations
		WHERE day BETWEEN $1::date AND $2::date AND ($3 = '' OR tenant_id = $3)
		  AND (day, tenant_id, meter) > ($4::date, $5, $6)
		ORDER BY day, tenant_id, meter
		LIMIT $7`,
		start.UTC().Format(time.DateOnly), end.UTC().Format(time.DateOnly), tenant, aDay, aTenant, aMeter, limit)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("query reconciliations: %w", err))
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (billing.Reconciliation, error) {
		var r billing.Reconciliation
		var meter string
		err := row.Scan(&r.Day, &r.TenantID, &meter, &r.Ours, &r.Reported, &r.Stripe, &r.Difference, &r.Explanation)
		r.Meter, r.Day = billing.Meter(meter), r.Day.UTC()
		return r, err
	})
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("read reconciliations: %w", err))
	}
	return out, nil
}
