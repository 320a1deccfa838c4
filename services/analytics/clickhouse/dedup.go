package clickhouse

import (
	"context"
	"fmt"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// The writer's dedup port (writer.Sink's Seen, RecentIDs and DropIDsBefore) on the shard's
// event_ids_local table: every stored event's tenant and id by the day it was received, filled
// by a materialized view in the same insert as events_local and sorted by (tenant_id, event_id),
// so that a look-up of some ids reads a few granules, not a tenant's whole history.

// seenQueryBytes bounds the ids of one Seen query: the whole query must fit ClickHouse's
// max_query_size (256 KiB by default).
const seenQueryBytes = 64 << 10

// Seen returns those of keys that event_ids holds, one query per tenant (and per 64 KiB of ids).
// The ids travel as bound parameters, which the driver quotes and escapes.
func (s *EventSink) Seen(ctx context.Context, keys []writer.EventKey) ([]writer.EventKey, error) {
	byTenant := map[string][]any{}
	var tenants []string
	for _, k := range keys {
		if _, ok := byTenant[k.Tenant]; !ok {
			tenants = append(tenants, k.Tenant)
		}
		byTenant[k.Tenant] = append(byTenant[k.Tenant], k.EventID)
	}
	var out []writer.EventKey
	for _, tenant := range tenants {
		ids := byTenant[tenant]
		for len(ids) > 0 {
			n, size := 0, 0
			for n < len(ids) && (n == 0 || size+len(ids[n].(string)) < seenQueryBytes) {
				size += len(ids[n].(string)) + 4 // quotes, comma, space
				n++
			}
			found, err := s.seen(ctx, tenant, ids[:n])
			if err != nil {
				return nil, err
			}
			out = append(out, found...)
			ids = ids[n:]
		}
	}
	return out, nil
}

func (s *EventSink) seen(ctx context.Context, tenant string, ids []any) ([]writer.EventKey, error) {
	rows, err := s.conn.Query(ctx, `SELECT DISTINCT event_id FROM event_ids_local WHERE tenant_id = ? AND event_id IN ?`,
		tenant, ch.GroupSet{Value: ids})
	if err != nil {
		return nil, fmt.Errorf("look up stored events: %w", err)
	}
	defer rows.Close()
	var out []writer.EventKey
	for rows.Next() {
		k := writer.EventKey{Tenant: tenant}
		if err := rows.Scan(&k.EventID); err != nil {
			return nil, fmt.Errorf("look up stored events: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up stored events: %w", err)
	}
	return out, nil
}

// RecentIDs streams the keys of event_ids from the day before since's on: the view computes the
// day in the server's time zone, and a day of margin keeps every event received since since
// whatever that zone is.
func (s *EventSink) RecentIDs(ctx context.Context, since time.Time, fn func(writer.EventKey)) error {
	rows, err := s.conn.Query(ctx, `SELECT tenant_id, event_id FROM event_ids_local WHERE day >= toDate(toDateTime(?)) - 1`, since.Unix())
	if err != nil {
		return fmt.Errorf("read recent event ids: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k writer.EventKey
		if err := rows.Scan(&k.Tenant, &k.EventID); err != nil {
			return fmt.Errorf("read recent event ids: %w", err)
		}
		fn(k)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read recent event ids: %w", err)
	}
	return nil
}

// DropIDsBefore drops the partitions (days) of event_ids that end more than a day before before's
// day — the margin of RecentIDs — so every key RecentIDs reads for a window since before stays.
func (s *EventSink) DropIDsBefore(ctx context.Context, before time.Time) error {
	rows, err := s.conn.Query(ctx, `SELECT DISTINCT partition_id FROM system.parts
		WHERE database = currentDatabase() AND table = 'event_ids_local' AND active AND max_date < toDate(toDateTime(?)) - 1`, before.Unix())
	if err != nil {
		return fmt.Errorf("list old event id partitions: %w", err)
	}
	var old []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("list old event id partitions: %w", err)
		}
		old = append(old, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list old event id partitions: %w", err)
	}
	for _, id := range old {
		if err := s.conn.Exec(ctx, `ALTER TABLE event_ids_local DROP PARTITION ID ?`, id); err != nil {
			return fmt.Errorf("drop event id partition %s: %w", id, err)
		}
	}
	return nil
}
