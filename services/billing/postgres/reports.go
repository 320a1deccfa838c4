package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

var _ billing.ReportStore = (*Store)(nil)

// ReportCandidates lists the usage rows of days from since on whose value exceeds the acked
// total and that have no report outstanding, of tenants mapped to a Stripe customer.
func (s *Store) ReportCandidates(ctx context.Context, since time.Time) ([]billing.ReportCandidate, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT u.tenant_id, u.meter, u.day, u.value, coalesce(r.reported, 0), a.stripe_customer_id
		FROM usage u
		JOIN billing_accounts a ON a.tenant_id = u.tenant_id AND a.stripe_customer_id IS NOT NULL
		LEFT JOIN LATERAL (
			SELECT max(to_value) FILTER (WHERE status = 'acked') AS reported,
			       count(*) FILTER (WHERE status <> 'acked') AS outstanding
			FROM meter_reports m
			WHERE m.tenant_id = u.tenant_id AND m.meter = u.meter AND m.day = u.day
		) r ON true
		WHERE u.day >= $1::date AND u.value > coalesce(r.reported, 0) AND coalesce(r.outstanding, 0) = 0
		ORDER BY u.day, u.tenant_id, u.meter`, since.UTC().Format(time.DateOnly))
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("query report candidates: %w", err))
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (billing.ReportCandidate, error) {
		var c billing.ReportCandidate
		var meter string
		err := row.Scan(&c.TenantID, &meter, &c.Day, &c.Value, &c.Reported, &c.CustomerID)
		c.Meter, c.Day = billing.Meter(meter), c.Day.UTC()
		return c, err
	})
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("read report candidates: %w", err))
	}
	return out, nil
}

// CreateReports writes pending reports; one that conflicts with an existing report (same
// identifier, or same start on the same tenant, meter and day: another planner's) is skipped.
func (s *Store) CreateReports(ctx context.Context, reports []billing.Report) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, r := range reports {
			tag, err := tx.Exec(ctx, `
				INSERT INTO meter_reports (identifier, tenant_id, meter, day, from_value, to_value, customer_id, event_name, event_time)
				VALUES ($1, $2, $3, $4::date, $5, $6, $7, $8, $9)
				ON CONFLICT DO NOTHING`,
				r.Identifier, r.TenantID, string(r.Meter), r.Day.UTC().Format(time.DateOnly), r.From, r.To, r.CustomerID, r.EventName, r.EventTime)
			if err != nil {
				return fmt.Errorf("insert report %s: %w", r.Identifier, err)
			}
			n += int(tag.RowsAffected())
		}
		return nil
	})
	if err != nil {
		return 0, pgdb.Classify(err)
	}
	return n, nil
}

const reportColumns = `identifier, tenant_id, meter, day, from_value, to_value, customer_id, event_name,
	event_time, status, attempts, last_error, next_attempt_at`

func scanReport(row pgx.CollectableRow) (billing.Report, error) {
	var r billing.Report
	var meter string
	err := row.Scan(&r.Identifier, &r.TenantID, &meter, &r.Day, &r.From, &r.To, &r.CustomerID, &r.EventName,
		&r.EventTime, &r.Status, &r.Attempts, &r.LastError, &r.NextAttempt)
	r.Meter, r.Day = billing.Meter(meter), r.Day.UTC()
	return r, err
}

// ClaimReports leases up to limit due pending reports: their next attempt moves to
// now+lease and their attempts count up, so another sender leaves them alone until then.
func (s *Store) ClaimReports(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]billing.Report, error) {
	rows, err := s.pool.Query(ctx, `
		UPDATE meter_reports SET next_attempt_at = $2, attempts = attempts + 1
		WHERE identifier IN (
			SELECT identifier FROM meter_reports
			WHERE status = 'pending' AND next_attempt_at <= $1
			ORDER BY next_attempt_at
			LIMIT $3
			FOR UPDATE SKIP LOCKED)
		RETURNING `+reportColumns, now, now.Add(lease), limit)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("claim reports: %w", err))
	}
	out, err := pgx.CollectRows(rows, scanReport)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("read claimed reports: %w", err))
	}
	return out, nil
}

// FinishReport sets a pending report's final status. A report already finished keeps its
// first outcome (a late sender cannot turn an ack into a rejection).
func (s *Store) FinishReport(ctx context.Context, identifier, status, reason string, at time.Time) error {
	_, err := s.pool.Exec(ctx, `
		UPDATE meter_reports SET status = $2, last_error = $3, done_time = $4
		WHERE identifier = $1 AND status = 'pending'`, identifier, status, reason, at)
	if err != nil {
		return pgdb.Classify(fmt.Errorf("finish report %s: %w", identifier, err))
	}
	return nil
}

// RetryReport keeps a pending report due at next, with the failure's reason.
func (s *Store) RetryReport(ctx context.Context, identifier, reason string, next time.Time) error {
	_, err := s.pool.Exec(ctx, `
		UPDATE meter_reports SET last_error = $2, next_attempt_at = $3
		WHERE identifier = $1 AND status = 'pending'`, identifier, reason, next)
	if err != nil {
		return pgdb.Classify(fmt.Errorf("retry report %s: %w", identifier, err))
	}
	return nil
}

// PendingReports returns how many reports are pending and the oldest one's creation time.
func (s *Store) PendingReports(ctx context.Context) (int, time.Time, error) {
	var n int
	var oldest *time.Time
	err := s.pool.QueryRow(ctx, `SELECT count(*), min(create_time) FROM meter_reports WHERE status = 'pending'`).Scan(&n, &oldest)
	if err != nil {
		return 0, time.Time{}, pgdb.Classify(fmt.Errorf("count pending reports: %w", err))
	}
	if oldest == nil {
		return n, time.Time{}, nil
	}
	return n, *oldest, nil
}

// Reports lists the reports of a tenant's meter on a day, oldest first (reconciliation and
// tests).
func (s *Store) Reports(ctx context.Context, tenant string, meter billing.Meter, day time.Time) ([]billing.Report, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+reportColumns+` FROM meter_reports
		WHERE tenant_id = $1 AND meter = $2 AND day = $3::date ORDER BY from_value, create_time`,
		tenant, string(meter), day.UTC().Format(time.DateOnly))
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("query reports: %w", err))
	}
	out, err := pgx.CollectRows(rows, scanReport)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("read reports: %w", err))
	}
	return out, nil
}
