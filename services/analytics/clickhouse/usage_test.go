package clickhouse_test

import (
	"context"
	"testing"
	"time"
)

// UsageCounts adds up every shard: per tenant, the events received on each day equal a count
// of the data set made apart from ClickHouse, and the storage estimate shares out the bytes
// the events tables take on disk.
func TestUsageCountsAddUpEveryShard(t *testing.T) {
	rows := shardedRows(false)
	s := newShardedStore(t, rows)
	type key struct {
		tenant, day string
	}
	want := map[key]int64{}
	tenants := map[string]bool{}
	for _, r := range rows {
		want[key{r.Event.GetTenantId(), r.Event.GetReceivedAt().AsTime().UTC().Format(time.DateOnly)}]++
		tenants[r.Event.GetTenantId()] = true
	}
	for k := range 2 {
		if n := s.onShard(t, k, `SELECT count() FROM events_local WHERE tenant_id != ''`); n == 0 {
			t.Fatalf("shard %d holds no events: the test would not show the shards are added up", k)
		}
	}
	var total uint64
	for k := range 2 {
		total += s.onShard(t, k, `SELECT sum(bytes_on_disk) FROM system.parts WHERE database = currentDatabase() AND active
			AND table IN ('events_local', 'events_hourly_local', 'event_ids_local')`)
	}
	ctx := context.Background()
	for day := at("2026-03-28T00:00:00Z"); day.Before(at("2026-04-05T00:00:00Z")); day = day.Add(24 * time.Hour) {
		got, err := s.viaShard[1].UsageCounts(ctx, day, day.Add(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(tenants) {
			t.Fatalf("%s: %d tenants, want %d: %+v", day.Format(time.DateOnly), len(got), len(tenants), got)
		}
		var storage int64
		for i, u := range got {
			if i > 0 && got[i-1].TenantID >= u.TenantID {
				t.Errorf("tenants not in order: %+v", got)
			}
			if w := want[key{u.TenantID, day.Format(time.DateOnly)}]; u.EventsStored != w {
				t.Errorf("%s %s: %d events stored, want %d", day.Format(time.DateOnly), u.TenantID, u.EventsStored, w)
			}
			if u.StorageBytes <= 0 {
				t.Errorf("%s: storage %d", u.TenantID, u.StorageBytes)
			}
			storage += u.StorageBytes
		}
		// The estimate shares out the tables' bytes (less the commit rows' share and rounding).
		if storage > int64(total) || storage < int64(total)*9/10 {
			t.Errorf("storage estimates add up to %d of the tables' %d bytes", storage, total)
		}
	}
}
