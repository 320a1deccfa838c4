package benchdata

import (
	"context"
	"errors"
	"fmt"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

// Progress prints a progress line of a bench ("bench: …").
func Progress(format string, args ...any) { fmt.Printf("bench: "+format+"\n", args...) }

// Reporter records one figure of a bench: its name, value, unit and a note.
type Reporter func(name string, v float64, unit, note string)

// Prepare makes sure database at addr holds the data set of cfg: reused with keep when complete,
// otherwise dropped and loaded, its parts merged, and recorded (MetaTable). It prints what it
// does and reports its figures to add.
func Prepare(ctx context.Context, addr string, cfg Config, database string, keep bool, add Reporter) (Dataset, error) {
	Progress("connecting to ClickHouse at %s", addr)
	user, err := clickhouse.EnvUser("CM_CLICKHOUSE")
	if err != nil {
		return Dataset{}, err
	}
	admin, err := ch.Open(&ch.Options{Addr: []string{addr}, Auth: ch.Auth{Username: user.Name, Password: user.Password}, DialTimeout: 5 * time.Second})
	if err == nil {
		err = admin.Ping(ctx)
	}
	if err != nil {
		return Dataset{}, fmt.Errorf("clickhouse at %s (run scripts/devenv.sh up): %w", addr, err)
	}
	defer admin.Close()
	var version string
	_ = admin.QueryRow(ctx, "SELECT version()").Scan(&version)
	db := database
	d := Plan(cfg, time.Now())
	want := d.Rows()

	fmt.Printf("\nData set (seed %d; ClickHouse %s, database %s)\n", cfg.Seed, version, db)
	if keep {
		if err := admin.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
			return d, err
		}
		conn, err := clickhouse.Open(ctx, addr, db, user)
		if err != nil {
			return d, err
		}
		end, ok, err := Reusable(ctx, conn, cfg, want)
		conn.Close()
		if err != nil {
			return d, err
		}
		if ok {
			d = Plan(cfg, end)
			Progress("-keep: %s holds this data set (%d rows, ending %s, %s ago); not loading", db, want,
				end.Format(time.RFC3339), time.Since(end).Round(time.Minute))
			add("data set: rows (reused with -keep)", float64(want), "rows", fmt.Sprintf("(%d tenants)", len(d.Tenants)))
			return d, nil
		}
		Progress("-keep: %s does not hold this data set complete; loading it", db)
	}
	if err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+db); err != nil {
		return d, err
	}
	if err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		return d, err
	}
	conn, err := clickhouse.Open(ctx, addr, db, user)
	if err != nil {
		return d, err
	}
	defer conn.Close()
	big := d.Tenants[0]
	Progress("loading %d events: tenant %s %d events, %d campaigns, %d users, %d days ending %s; %d small tenants of %d; %d at once",
		want, big.ID, big.Events, len(big.Campaigns), big.Users, d.Days, d.End.Format(time.RFC3339), len(d.Tenants)-1, SmallEvents, Loaders())
	took, err := Load(ctx, conn, d)
	if err != nil {
		return d, err
	}
	Progress("loaded %d rows in %s (%.0f rows/s)", want, took.Round(time.Millisecond), float64(want)/took.Seconds())
	add("data set: rows loaded", float64(want), "rows", fmt.Sprintf("(%d tenants; big: %d events, %d campaigns, %d users)", len(d.Tenants), big.Events, len(big.Campaigns), big.Users))
	add("load: INSERT … SELECT from numbers()", took.Seconds(), "s", fmt.Sprintf("(%.0f rows/s, %d inserts at once, 1M-row blocks)", float64(want)/took.Seconds(), Loaders()))

	// The materialized view fired on every block: the rollup counts every event.
	var raw, rolled, commits uint64
	if err := conn.QueryRow(ctx, "SELECT countIf(tenant_id != ''), countIf(tenant_id = '') FROM events").Scan(&raw, &commits); err != nil {
		return d, err
	}
	if err := conn.QueryRow(ctx, "SELECT toUInt64(countMerge(events)) FROM events_hourly").Scan(&rolled); err != nil {
		return d, err
	}
	add("load: count() of events", float64(raw), "rows", fmt.Sprintf("(and %d commit rows, one per %d-event block, partition and month)", commits, BatchRows()))
	add("load: sum of countMerge(events) of events_hourly", float64(rolled), "rows", "(the materialized view's rollup)")
	if raw != uint64(want) || rolled != raw {
		return d, fmt.Errorf("loaded %d rows, events holds %d, the rollup counts %d", want, raw, rolled)
	}

	// Merge the inserted parts as background merges would in a while, so every run (and a
	// -keep re-run) queries the same layout: one part of events, one per month of the rollup.
	start := time.Now()
	for _, t := range []string{"events_local", "events_hourly_local"} {
		if err := Optimize(ctx, conn, t); err != nil {
			return d, err
		}
	}
	var parts, partitions, hourlyRows uint64
	if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(table, partition) FROM system.parts WHERE database = currentDatabase() AND table IN ('events_local', 'events_hourly_local') AND active").Scan(&parts, &partitions); err != nil {
		return d, err
	}
	if parts != partitions {
		return d, fmt.Errorf("after OPTIMIZE … FINAL, events and events_hourly still hold %d parts in %d partitions", parts, partitions)
	}
	_ = conn.QueryRow(ctx, "SELECT count() FROM events_hourly").Scan(&hourlyRows)
	add("load: OPTIMIZE TABLE … FINAL (events_local, events_hourly_local)", time.Since(start).Seconds(), "s", fmt.Sprintf("(one part per partition; events_hourly: %d rows)", hourlyRows))
	if err := conn.Exec(ctx, MetaTable); err != nil {
		return d, err
	}
	// A native batch: 18.16 does not answer clickhouse-go's INSERT … VALUES with arguments.
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO bench_dataset (seed, events, small_tenants, campaigns, days, end_time, row_count)")
	if err == nil {
		err = batch.Append(cfg.Seed, cfg.Events, int32(cfg.SmallTenants), int32(cfg.Campaigns), int32(cfg.Days), d.End, uint64(want))
	}
	if err == nil {
		err = batch.Send()
	}
	if err != nil {
		return d, fmt.Errorf("record the data set: %w", err)
	}
	return d, nil
}

// Optimize merges table into one part per partition. ClickHouse does nothing (and says
// nothing) while background merges hold the parts, hence optimize_throw_if_noop and retries.
func Optimize(ctx context.Context, conn driver.Conn, table string) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		err := conn.Exec(ch.Context(ctx, ch.WithSettings(ch.Settings{"optimize_throw_if_noop": 1})), "OPTIMIZE TABLE "+table+" FINAL")
		var ex *ch.Exception
		if err == nil || !errors.As(err, &ex) || ex.Code != 388 || time.Now().After(deadline) { // 388: CANNOT_ASSIGN_OPTIMIZE
			if err != nil {
				return fmt.Errorf("optimize %s: %w", table, err)
			}
			return nil
		}
		select { // the background merges holding the parts end on their own: ask again
		case <-ctx.Done():
			return fmt.Errorf("optimize %s: %w", table, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}
