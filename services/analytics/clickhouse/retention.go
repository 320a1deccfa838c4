package clickhouse

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/campaignmesh/campaignmesh/services/analytics"
)

// retentionTag marks the retention mutations' commands (an always-true condition) so that a
// run finds the one still running.
const retentionTag = "cmretention"

// Retention is one shard's raw events (events_local) as analytics.Retention needs them, over
// the writer user's connection to the shard (mutations and partition drops need it).
type Retention struct{ conn driver.Conn }

var _ analytics.RetentionStore = Retention{}

// NewRetention returns the retention store of the shard conn connects to.
func NewRetention(conn driver.Conn) Retention { return Retention{conn: conn} }

// expiredWhere is the condition of rules' rows and its arguments: per rule, its tenants' rows
// before its time. Commit rows have no tenant and never match.
func expiredWhere(rules []analytics.RetentionRule) (string, []any) {
	var clauses []string
	var args []any
	for _, r := range rules {
		clauses = append(clauses, "(tenant_id IN ("+strings.TrimSuffix(strings.Repeat("?, ", len(r.Tenants)), ", ")+") AND event_time < ?)")
		for _, t := range r.Tenants {
			args = append(args, t)
		}
		args = append(args, r.Before)
	}
	return strings.Join(clauses, " OR "), args
}

// CountExpired implements analytics.RetentionStore. The primary key starts with the tenant, so
// the count reads only the due tenants' granules.
func (s Retention) CountExpired(ctx context.Context, rules []analytics.RetentionRule) (uint64, error) {
	where, args := expiredWhere(rules)
	var n uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM events_local WHERE "+where, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count expired events: %w", err)
	}
	return n, nil
}

// Deleting implements analytics.RetentionStore: a retention mutation not done yet.
func (s Retention) Deleting(ctx context.Context) (bool, error) {
	var n uint64
	if err := s.conn.QueryRow(ctx, `SELECT count() FROM system.mutations
		WHERE database = currentDatabase() AND table = 'events_local' AND is_done = 0 AND position(command, ?) > 0`, retentionTag).Scan(&n); err != nil {
		return false, fmt.Errorf("read retention mutations: %w", err)
	}
	return n > 0, nil
}

// DeleteExpired implements analytics.RetentionStore with one ALTER TABLE … DELETE.
func (s Retention) DeleteExpired(ctx context.Context, rules []analytics.RetentionRule) error {
	where, args := expiredWhere(rules)
	if err := s.conn.Exec(ctx, "ALTER TABLE events_local DELETE WHERE ("+where+") AND ? != ''", append(args, retentionTag)...); err != nil {
		return fmt.Errorf("delete expired events: %w", err)
	}
	return nil
}

// DropMonthsBefore implements analytics.RetentionStore: events_local is partitioned by month
// (toYYYYMM(event_date)), so a month whose last day is before before's day goes whole, with
// the writer's commit rows of that month. Exactly-once is not at stake: a batch delivered later
// with rows of a dropped month (events whose corrected time is that old) finds no commit and is
// written as new — its events already stored within the dedup window are still dropped by the
// writer's dedup step — and the next run drops them again.
func (s Retention) DropMonthsBefore(ctx context.Context, before time.Time) ([]string, error) {
	rows, err := s.conn.Query(ctx, `SELECT DISTINCT partition_id FROM system.parts
		WHERE database = currentDatabase() AND table = 'events_local' AND active`)
	if err != nil {
		return nil, fmt.Errorf("list event partitions: %w", err)
	}
	var old []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list event partitions: %w", err)
		}
		if monthEndsBefore(id, before) {
			old = append(old, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list event partitions: %w", err)
	}
	for _, id := range old {
		if err := s.conn.Exec(ctx, `ALTER TABLE events_local DROP PARTITION ID ?`, id); err != nil {
			return nil, fmt.Errorf("drop event partition %s: %w", id, err)
		}
	}
	return old, nil
}

// monthEndsBefore tells whether the month of partition id (YYYYMM) ends at or before before:
// the next month starts no later than before's day (UTC, as event_date). Other ids are kept.
func monthEndsBefore(id string, before time.Time) bool {
	ym, err := strconv.Atoi(id)
	if err != nil || len(id) != 6 {
		return false
	}
	next := time.Date(ym/100, time.Month(ym%100)+1, 1, 0, 0, 0, 0, time.UTC)
	day := before.UTC().Truncate(24 * time.Hour)
	return !next.After(day)
}
