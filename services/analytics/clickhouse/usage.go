package clickhouse

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/campaignmesh/campaignmesh/services/analytics"
)

var _ analytics.UsageStore = (*Queries)(nil)

// usageTables are the tables whose disk the storage estimate shares out: the events, their
// hourly rollup and their event-id index, all of them kept per tenant.
const usageTables = "'events_local', 'events_hourly_local', 'event_ids_local'"

// UsageCounts implements analytics.UsageStore on every shard (the writer user's connections,
// as erasures do), adding the shards' answers up:
//
//   - events stored: the tenant's rows of events_local received in [from, to) (received_ms;
//     the writer stores each event once; its commit rows, of the empty tenant, are left out);
//   - storage bytes, an estimate measured now: on each shard the tenant's share of the
//     events_local rows times the bytes on disk of the shard's events tables (usageTables,
//     the active parts of system.parts), so the per-row cost of the rollup and the index
//     is spread over the events that made it.
//
// Both scan the tenant column of events_local (the table is sorted by tenant first); they
// run under the query limits of the API.
func (q *Queries) UsageCounts(ctx context.Context, from, to time.Time) ([]analytics.TenantUsage, error) {
	ctx = q.settings(ctx)
	byTenant := map[string]*analytics.TenantUsage{}
	for k, conn := range q.writers() {
		if err := q.shardUsage(ctx, conn, from, to, byTenant); err != nil {
			return nil, fmt.Errorf("usage counts of shard %d: %w", k, err)
		}
	}
	out := make([]analytics.TenantUsage, 0, len(byTenant))
	for _, u := range byTenant {
		out = append(out, *u)
	}
	slices.SortFunc(out, func(a, b analytics.TenantUsage) int { return strings.Compare(a.TenantID, b.TenantID) })
	return out, nil
}

// shardUsage adds one shard's counts to byTenant.
func (q *Queries) shardUsage(ctx context.Context, conn driver.Conn, from, to time.Time, byTenant map[string]*analytics.TenantUsage) error {
	var bytes, allRows uint64
	if err := conn.QueryRow(ctx, `SELECT
			sumIf(bytes_on_disk, table IN (`+usageTables+`)), sumIf(rows, table = 'events_local')
		FROM system.parts WHERE database = currentDatabase() AND active`).Scan(&bytes, &allRows); err != nil {
		return q.storeError(ctx, "read the events tables' size", err)
	}
	rows, err := conn.Query(ctx, `SELECT tenant_id,
			countIf(received_ms >= ? AND received_ms < ?) AS day_rows, count() AS all_rows
		FROM events_local WHERE tenant_id != '' GROUP BY tenant_id`, uint64(from.UnixMilli()), uint64(to.UnixMilli()))
	if err != nil {
		return q.queryError(ctx, "count the tenants' events", err)
	}
	defer rows.Close()
	for rows.Next() {
		var tenant string
		var day, all uint64
		if err := rows.Scan(&tenant, &day, &all); err != nil {
			return fmt.Errorf("count the tenants' events: scan: %w", err)
		}
		u := byTenant[tenant]
		if u == nil {
			u = &analytics.TenantUsage{TenantID: tenant}
			byTenant[tenant] = u
		}
		u.EventsStored += int64(day)
		if allRows > 0 {
			u.StorageBytes += int64(float64(bytes) * float64(all) / float64(allRows))
		}
	}
	if err := rows.Err(); err != nil {
		return q.queryError(ctx, "count the tenants' events", err)
	}
	return nil
}
