package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

var (
	_ billing.Store         = (*Store)(nil)
	_ billing.MeteringStore = (*Store)(nil)
	_ billing.UsageRecorder = (*Store)(nil)
)

// RecordUnits stores units in one transaction; an id already stored is left as it is. It
// returns how many were new.
func (s *Store) RecordUnits(ctx context.Context, units []billing.Unit) (int, error) {
	if len(units) == 0 {
		return 0, nil
	}
	b := &pgx.Batch{}
	for _, u := range units {
		b.Queue(`INSERT INTO usage_units (id, tenant_id, day, meter, units) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
			u.ID, u.TenantID, u.Day, string(u.Meter), u.Units)
	}
	return s.sendBatch(ctx, b, "record usage units")
}

func (s *Store) sendBatch(ctx context.Context, b *pgx.Batch, what string) (int, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	res := tx.SendBatch(ctx, b)
	n := 0
	for range b.Len() {
		tag, err := res.Exec()
		if err != nil {
			_ = res.Close()
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		n += int(tag.RowsAffected())
	}
	if err := res.Close(); err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("%s: commit: %w", what, err)
	}
	return n, nil
}

// OpenDays implements billing.MeteringStore: the days from since to until with recorded units
// or usage and no closed usage row.
func (s *Store) OpenDays(ctx context.Context, since, until time.Time) ([]time.Time, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT day FROM (
			SELECT day FROM usage WHERE NOT closed AND day BETWEEN $1 AND $2
			UNION SELECT DISTINCT day FROM usage_units WHERE day BETWEEN $1 AND $2
		) d
		WHERE NOT EXISTS (SELECT 1 FROM usage u WHERE u.day = d.day AND u.closed)
		ORDER BY day`, since, until)
	if err != nil {
		return nil, fmt.Errorf("list open days: %w", err)
	}
	days, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
	if err != nil {
		return nil, fmt.Errorf("list open days: %w", err)
	}
	return days, nil
}

// DayUsage implements billing.MeteringStore.
func (s *Store) DayUsage(ctx context.Context, day time.Time) ([]billing.Usage, error) {
	return s.queryUsage(ctx, `SELECT tenant_id, day, meter, value, closed FROM usage WHERE day = $1`, day)
}

// ListUsage returns the usage q selects, by tenant, day and meter: at most limit rows (0: all).
func (s *Store) ListUsage(ctx context.Context, q billing.UsageQuery, limit int) ([]billing.Usage, error) {
	meters := make([]string, len(q.Meters))
	for i, m := range q.Meters {
		meters[i] = string(m)
	}
	return s.queryUsage(ctx, `SELECT tenant_id, day, meter, value, closed FROM usage
		WHERE ($1 = '' OR tenant_id = $1) AND day BETWEEN $2 AND $3 AND (cardinality($4::text[]) = 0 OR meter = ANY($4))
		ORDER BY tenant_id, day, meter LIMIT CASE WHEN $5 > 0 THEN $5 END`, q.TenantID, q.Start, q.End, meters, limit)
}

func (s *Store) queryUsage(ctx context.Context, sql string, args ...any) ([]billing.Usage, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read usage: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (billing.Usage, error) {
		var u billing.Usage
		var meter string
		err := r.Scan(&u.TenantID, &u.Day, &meter, &u.Value, &u.Closed)
		u.Meter, u.Day = billing.Meter(meter), u.Day.UTC()
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("read usage: %w", err)
	}
	return out, nil
}

// UnitCounts implements billing.MeteringStore.
func (s *Store) UnitCounts(ctx context.Context, day time.Time) (map[string]map[billing.Meter]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT tenant_id, meter, sum(units)::bigint FROM usage_units WHERE day = $1 GROUP BY tenant_id, meter`, day)
	if err != nil {
		return nil, fmt.Errorf("count usage units: %w", err)
	}
	out := map[string]map[billing.Meter]int64{}
	var (
		tenant, meter string
		n             int64
	)
	_, err = pgx.ForEachRow(rows, []any{&tenant, &meter, &n}, func() error {
		if out[tenant] == nil {
			out[tenant] = map[billing.Meter]int64{}
		}
		out[tenant][billing.Meter(meter)] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count usage units: %w", err)
	}
	return out, nil
}

// SaveUsage implements billing.MeteringStore: one transaction; a closed row never changes.
func (s *Store) SaveUsage(ctx context.Context, day time.Time, rows []billing.Usage, close bool) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("save usage: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	b := &pgx.Batch{}
	for _, u := range rows {
		b.Queue(`INSERT INTO usage (tenant_id, day, meter, value) VALUES ($1, $2, $3, $4)
			ON CONFLICT (tenant_id, day, meter) DO UPDATE SET value = excluded.value, computed_at = clock_timestamp()
			WHERE NOT usage.closed`, u.TenantID, day, string(u.Meter), u.Value)
	}
	if close {
		b.Queue(`UPDATE usage SET closed = true WHERE day = $1 AND NOT closed`, day)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("save usage: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("save usage: commit: %w", err)
	}
	return nil
}

// PeriodUsage implements billing.MeteringStore.
func (s *Store) PeriodUsage(ctx context.Context, tenantID string, meter billing.Meter, start, end time.Time) (int64, error) {
	sql := `SELECT coalesce(sum(value), 0)::bigint FROM usage WHERE tenant_id = $1 AND meter = $2 AND day >= $3 AND day < $4`
	if meter.Gauge() {
		sql = `SELECT coalesce((SELECT value FROM usage WHERE tenant_id = $1 AND meter = $2 AND day < $4 AND $3::date IS NOT NULL
			ORDER BY day DESC LIMIT 1), 0)`
	}
	var n int64
	if err := s.pool.QueryRow(ctx, sql, tenantID, string(meter), start, end).Scan(&n); err != nil {
		return 0, fmt.Errorf("read period usage: %w", err)
	}
	return n, nil
}

// RecordCrossing implements billing.MeteringStore.
func (s *Store) RecordCrossing(ctx context.Context, c billing.Crossing, rec *audit.Record) (bool, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("record quota crossing: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	tag, err := tx.Exec(ctx, `INSERT INTO quota_crossings (tenant_id, meter, period, period_start, hard, quota_limit, used)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
		c.TenantID, string(c.Limit.Meter), string(c.Limit.Period), c.PeriodStart, c.Limit.Hard, c.Limit.Limit, c.Used)
	if err != nil {
		return false, fmt.Errorf("record quota crossing: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	if rec != nil {
		if err := auditpg.InsertTx(ctx, tx, *rec); err != nil {
			return false, fmt.Errorf("record quota crossing: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("record quota crossing: commit: %w", err)
	}
	return true, nil
}
