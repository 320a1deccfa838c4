// Package migrations holds the analytics schema's versions, applied in order by
// clickhouse.Migrate with goose: SQL files (embedded by the clickhouse package) and, where SQL
// alone cannot be made safe to run again, Go migrations such as EventsV2.
package migrations

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// EventsV2Version is the version of EventsV2.
const EventsV2Version = 4

// EventsV2 is migration 00004: the schema shaped for the questions analytics asks.
//
//   - events is sorted by (tenant_id, campaign_id, event_time, event_id) and partitioned by
//     month, so a campaign's or a time range's query reads only its rows. It stays a
//     ReplacingMergeTree(stream_seq), but only as a safety net: queries do not read it with
//     FINAL, because the writer stores each (tenant_id, event_id) once (docs/pipeline.md).
//   - events_hourly gains users_approx, a uniqCombined state next to the exact uniqExact one:
//     merging it is several times cheaper, and summaries use it unless asked for exact counts.
//   - event_ids (tenant, event id, UTC day received), fed by a materialized view from events,
//     is what the writer checks a repeated event id against.
//
// The old events table is moved into the new one with INSERT … SELECT from events FINAL, so an
// event v1 held twice (a client retry in another batch) is kept once, in its newest version;
// the rollup and event_ids are then rebuilt from the moved rows, so the rollup counts exactly
// what the raw table holds (v1's rollup had counted such retries twice).
//
// ClickHouse has no transactions and no conditional DDL (a RENAME cannot say "if it is still
// the old table"), so this is Go, not SQL: EventsV2Steps run in order, each finds out from the
// tables present what is left to do, and an interrupted run is completed by running them all
// again — which is what goose does on the next start, the version being recorded only at the
// end. Nothing else writes meanwhile: the analytics app migrates before starting its writer.
func EventsV2(ctx context.Context, db *sql.DB) error {
	for _, s := range EventsV2Steps {
		if err := s.Run(ctx, db); err != nil {
			return fmt.Errorf("migration %d, %s: %w", EventsV2Version, s.Name, err)
		}
	}
	return nil
}

// Step is one step of a Go migration. Every step can be run again, after itself or after any
// later step, and leaves the schema as it found it or further on.
type Step struct {
	Name string
	Run  func(ctx context.Context, db *sql.DB) error
}

// EventsV2Steps are EventsV2's steps, in order (tests run a prefix of them to stand for a
// migration that died there).
var EventsV2Steps = []Step{
	{"drop the materialized views", dropViews},
	{"copy events into events_v2", copyEvents},
	{"swap events_v2 in as events", swapEvents},
	{"rebuild the rollup into events_hourly_v2", rebuildRollup},
	{"swap events_hourly_v2 in as events_hourly", swapRollup},
	{"fill event_ids", fillEventIDs},
	{"create the materialized views", createViews},
}

// eventColumns are the columns of events, in both versions.
const eventColumns = `tenant_id, event_id, type, name, user_id, anonymous_id, campaign_id, variant, value_micros, currency,
	event_date, event_time, event_ms, client_ms, received_ms, prop_keys, prop_values, ip, user_agent, locale, app, device,
	source, stream_seq`

// createEventsV2 is the new events table (built as events_v2, then renamed).
const createEventsV2 = `CREATE TABLE events_v2 (
	tenant_id String,
	event_id String,
	type String,
	name String,
	user_id String,
	anonymous_id String,
	campaign_id String,
	variant String,
	value_micros Int64,
	currency String,
	event_date Date,
	event_time DateTime,
	event_ms UInt64,
	client_ms UInt64,
	received_ms UInt64,
	prop_keys Array(String),
	prop_values Array(String),
	ip String,
	user_agent String,
	locale String,
	app String,
	device String,
	source String,
	stream_seq UInt64
) ENGINE = ReplacingMergeTree(stream_seq)
PARTITION BY toYYYYMM(event_date)
ORDER BY (tenant_id, campaign_id, event_time, event_id)`

// The sorting keys of events as system.tables shows them, which tell the versions apart.
const (
	v1SortingKey = "tenant_id, event_id"
	v2SortingKey = "tenant_id, campaign_id, event_time, event_id"
)

// createRollupV2 is the new rollup (built as events_hourly_v2, then renamed): an
// AggregatingMergeTree cannot gain a state column filled for its existing rows. Its granules
// are small because a query deserializes the distinct-user states of whole granules: a
// campaign's week is about 1,500 rows, which 8,192-row granules would pad with others'.
const createRollupV2 = `CREATE TABLE events_hourly_v2 (
	tenant_id String,
	campaign_id String,
	hour DateTime,
	variant String,
	type String,
	currency String,
	events AggregateFunction(count),
	value_micros AggregateFunction(sum, Int64),
	users AggregateFunction(uniqExact, String),
	users_approx AggregateFunction(uniqCombined, String)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, campaign_id, hour, variant, type, currency)
SETTINGS index_granularity = 1024`

// rollupColumns and rollupSelect are the rollup's columns and how rows of events become them:
// the materialized view's query, and the rebuild's.
const (
	rollupColumns = `tenant_id, campaign_id, hour, variant, type, currency, events, value_micros, users, users_approx`
	rollupSelect  = `SELECT tenant_id, campaign_id, toStartOfHour(event_time) AS hour, variant, type, currency,
	countState() AS events, sumState(value_micros) AS value_micros,
	uniqExactState(if(user_id != '', user_id, anonymous_id)) AS users,
	uniqCombinedState(if(user_id != '', user_id, anonymous_id)) AS users_approx
FROM events`
	rollupGroupBy = ` GROUP BY tenant_id, campaign_id, hour, variant, type, currency`
)

// createEventIDs is the table of stored event ids by the UTC day they were received: the
// writer confirms a repeated id against it and drops its partitions after its dedup window.
// Small granules: the writer looks up a few ids at a time.
const createEventIDs = `CREATE TABLE event_ids (
	tenant_id String,
	event_id String,
	day Date
) ENGINE = MergeTree()
PARTITION BY day
ORDER BY (tenant_id, event_id)
SETTINGS index_granularity = 1024`

// eventIDsSelect is how rows of events become rows of event_ids. The day is UTC whatever the
// server's zone (toDateTime's zone argument), from received_ms: the dedup window runs by
// arrival, not by the event's own (client) time.
const eventIDsSelect = `SELECT tenant_id, event_id, toDate(toDateTime(intDiv(received_ms, 1000), 'UTC')) AS day FROM events`

// The materialized views; each runs on every insert into events, in the same INSERT.
const (
	createRollupView   = `CREATE MATERIALIZED VIEW IF NOT EXISTS events_hourly_mv TO events_hourly AS ` + rollupSelect + rollupGroupBy
	createEventIDsView = `CREATE MATERIALIZED VIEW IF NOT EXISTS event_ids_mv TO event_ids AS ` + eventIDsSelect
)

// dropViews drops the views first: they are recreated last, on the new tables (a view follows
// its source table by name, and the old rollup view has no users_approx). No writer runs
// during migrations, so no insert misses them.
func dropViews(ctx context.Context, db *sql.DB) error {
	return exec(ctx, db, `DROP TABLE IF EXISTS events_hourly_mv`, `DROP TABLE IF EXISTS event_ids_mv`)
}

// copyEvents builds events_v2 from the v1 table while events is still v1, starting over from
// an empty events_v2 (a copy interrupted midway is redone, not resumed), and checks that it
// holds exactly the rows of events FINAL: one per (tenant_id, event_id), the newest version.
func copyEvents(ctx context.Context, db *sql.DB) error {
	key, err := sortingKey(ctx, db, "events")
	if err != nil || key != v1SortingKey {
		return err // already moved (or being swapped in: swapEvents)
	}
	if err := exec(ctx, db, `DROP TABLE IF EXISTS events_v2`, createEventsV2,
		`INSERT INTO events_v2 (`+eventColumns+`) SELECT `+eventColumns+` FROM events FINAL`); err != nil {
		return err
	}
	return sameCount(ctx, db, `SELECT count() FROM events FINAL`, `SELECT count() FROM events_v2`)
}

// swapEvents renames events_v2 to events and drops the v1 table. It acts on what it finds:
// v1 still as events (then copyEvents has just filled events_v2 in this run), or events
// missing because a run died inside the RENAME, between its two renames.
func swapEvents(ctx context.Context, db *sql.DB) error {
	key, err := sortingKey(ctx, db, "events")
	if err != nil {
		return err
	}
	switch key {
	case v1SortingKey:
		if err := exec(ctx, db, `DROP TABLE IF EXISTS events_v1`, `RENAME TABLE events TO events_v1, events_v2 TO events`); err != nil {
			return err
		}
	case "":
		if err := exec(ctx, db, `RENAME TABLE events_v2 TO events`); err != nil {
			return err
		}
	case v2SortingKey:
	default:
		return fmt.Errorf("events is sorted by (%s), neither version 1 nor 2", key)
	}
	return exec(ctx, db, `DROP TABLE IF EXISTS events_v1`)
}

// rebuildRollup builds events_hourly_v2 from events (the moved rows), one partition of events
// (a month) at a time so the exact distinct-user states of one month at most are in memory,
// and checks that it counts every row of events once.
func rebuildRollup(ctx context.Context, db *sql.DB) error {
	if err := exec(ctx, db, `DROP TABLE IF EXISTS events_hourly_v2`, createRollupV2); err != nil {
		return err
	}
	if err := perPartition(ctx, db, `INSERT INTO events_hourly_v2 (`+rollupColumns+`) `+rollupSelect, rollupGroupBy); err != nil {
		return err
	}
	return sameCount(ctx, db, `SELECT count() FROM events`, `SELECT countMerge(events) FROM events_hourly_v2`)
}

// swapRollup renames events_hourly_v2 to events_hourly and drops the old rollup; like
// swapEvents it also completes a RENAME that died between its two renames.
func swapRollup(ctx context.Context, db *sql.DB) error {
	exists, err := tableExists(ctx, db, "events_hourly")
	if err != nil {
		return err
	}
	rename := `RENAME TABLE events_hourly_v2 TO events_hourly`
	if exists {
		rename = `RENAME TABLE events_hourly TO events_hourly_v1, events_hourly_v2 TO events_hourly`
	}
	return exec(ctx, db, `DROP TABLE IF EXISTS events_hourly_v1`, rename, `DROP TABLE IF EXISTS events_hourly_v1`)
}

// fillEventIDs (re)creates event_ids from events, a month of events at a time, and checks it
// has a row per row of events.
func fillEventIDs(ctx context.Context, db *sql.DB) error {
	if err := exec(ctx, db, `DROP TABLE IF EXISTS event_ids`, createEventIDs); err != nil {
		return err
	}
	if err := perPartition(ctx, db, `INSERT INTO event_ids (tenant_id, event_id, day) `+eventIDsSelect, ""); err != nil {
		return err
	}
	return sameCount(ctx, db, `SELECT count() FROM events`, `SELECT count() FROM event_ids`)
}

func createViews(ctx context.Context, db *sql.DB) error {
	return exec(ctx, db, createRollupView, createEventIDsView)
}

func exec(ctx context.Context, db *sql.DB, statements ...string) error {
	for _, q := range statements {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", firstLine(q), err)
		}
	}
	return nil
}

func firstLine(q string) string {
	if i := strings.IndexByte(q, '\n'); i >= 0 {
		return q[:i] + " …"
	}
	return q
}

// perPartition runs insertSelect (an INSERT … SELECT … FROM events) once per partition of
// events, adding the partition's condition and then tail.
func perPartition(ctx context.Context, db *sql.DB, insertSelect, tail string) error {
	rows, err := db.QueryContext(ctx, `SELECT DISTINCT partition FROM system.parts
		WHERE database = currentDatabase() AND table = 'events' AND active ORDER BY partition`)
	if err != nil {
		return fmt.Errorf("list the partitions of events: %w", err)
	}
	var months []uint32
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			rows.Close()
			return fmt.Errorf("list the partitions of events: %w", err)
		}
		var m uint32
		if _, err := fmt.Sscan(p, &m); err != nil {
			rows.Close()
			return fmt.Errorf("partition %q of events is not a month: %w", p, err)
		}
		months = append(months, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list the partitions of events: %w", err)
	}
	for _, m := range months {
		if err := exec(ctx, db, fmt.Sprintf("%s WHERE toYYYYMM(event_date) = %d%s", insertSelect, m, tail)); err != nil {
			return fmt.Errorf("month %d: %w", m, err)
		}
	}
	return nil
}

// sameCount fails unless the two counting queries agree.
func sameCount(ctx context.Context, db *sql.DB, want, got string) error {
	var w, g uint64
	if err := db.QueryRowContext(ctx, want).Scan(&w); err != nil {
		return fmt.Errorf("%s: %w", want, err)
	}
	if err := db.QueryRowContext(ctx, got).Scan(&g); err != nil {
		return fmt.Errorf("%s: %w", got, err)
	}
	if w != g {
		return fmt.Errorf("%s = %d, but %s = %d", got, g, want, w)
	}
	return nil
}

// sortingKey is table's sorting key ("" when there is no such table).
func sortingKey(ctx context.Context, db *sql.DB, table string) (string, error) {
	var key string
	err := db.QueryRowContext(ctx, `SELECT sorting_key FROM system.tables WHERE database = currentDatabase() AND name = ?`, table).Scan(&key)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the sorting key of %s: %w", table, err)
	}
	return key, nil
}

func tableExists(ctx context.Context, db *sql.DB, table string) (bool, error) {
	var n uint64
	if err := db.QueryRowContext(ctx, `SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?`, table).Scan(&n); err != nil {
		return false, fmt.Errorf("look for table %s: %w", table, err)
	}
	return n > 0, nil
}
