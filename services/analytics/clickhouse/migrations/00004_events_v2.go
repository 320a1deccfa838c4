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

	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
)

// EventsV2Version is the version of EventsV2.
const EventsV2Version = 4

// DefaultCluster is the ClickHouse cluster (remote_servers) the Distributed tables read
// through when the layout names none: the dev server defines it, with one shard.
const DefaultCluster = "cm_analytics"

// Layout is where a database of the analytics schema sits: the ClickHouse cluster its
// Distributed tables read through, and which of the cluster's shards it is. Every shard has a
// database of the same name; a stream partition's rows are on shard stream_part % ShardCount.
type Layout struct {
	Cluster    string
	ShardIndex int
	ShardCount int
}

func (l Layout) withDefaults() Layout {
	if l.Cluster == "" {
		l.Cluster = DefaultCluster
	}
	if l.ShardCount < 1 {
		l.ShardCount = 1
	}
	return l
}

// EventsV2 is migration 00004 for a shard of layout: the schema shaped for the questions
// analytics asks, on one ClickHouse shard of a cluster.
//
//   - events_local is a MergeTree sorted by (tenant_id, campaign_id, event_time, event_id) and
//     partitioned by month, so a campaign's or a time range's query reads only its rows. Queries
//     read it without FINAL: the writer stores each (tenant_id, event_id) once
//     (services/analytics/writer). stream_part is the event's stream partition
//     (natsjs.Partition); commit_seqs is set only on the writer's commit rows (tenant_id = ”),
//     which record the stream sequences each insert stored per partition and month.
//   - events_hourly_local is the rollup, with users_approx (uniqCombined) next to the exact state.
//   - event_ids_local (tenant, event id, UTC day received) is what the writer checks a repeated
//     event id against. Both are filled by materialized views on events_local that leave commit
//     rows out.
//   - events and events_hourly are Distributed tables over the cluster's _local tables: what
//     queries read. writer_epochs stays as it was (the writer reads it on shard 0).
//
// Version 3's events (one table, ReplacingMergeTree by event id) moves into events_local with
// INSERT … SELECT from events FINAL, keeping the rows of this shard's partitions, so an event v1
// held twice (a client retry in another batch) is kept once, in its newest version; commit rows
// are written for the moved rows, one per partition and month, listing their sequences, so a
// batch a version-3 writer stored and did not acknowledge is recognised as stored. The rollup is
// rebuilt from the moved rows (v1's counted such retries twice) and event_ids carried over.
//
// ClickHouse has no transactions and no conditional DDL (a RENAME cannot say "if it is still
// the old table"), so this is Go, not SQL: the steps run in order, each finds out from the tables
// present what is left to do, and an interrupted run is completed by running them all again —
// which is what goose does on the next start, the version being recorded only at the end.
// Nothing else writes meanwhile: the analytics app migrates before starting its writer.
func EventsV2(layout Layout) func(ctx context.Context, db *sql.DB) error {
	steps := EventsV2Steps(layout)
	return func(ctx context.Context, db *sql.DB) error {
		for _, s := range steps {
			if err := s.Run(ctx, db); err != nil {
				return fmt.Errorf("migration %d, %s: %w", EventsV2Version, s.Name, err)
			}
		}
		return nil
	}
}

// Step is one step of a Go migration. Every step can be run again, after itself or after any
// later step, and leaves the schema as it found it or further on.
type Step struct {
	Name string
	Run  func(ctx context.Context, db *sql.DB) error
}

// EventsV2Steps are EventsV2's steps for a shard of layout, in order (tests run a prefix of them
// to stand for a migration that died there).
func EventsV2Steps(layout Layout) []Step {
	l := layout.withDefaults()
	return []Step{
		{"check the cluster", func(ctx context.Context, db *sql.DB) error { return checkCluster(ctx, db, l) }},
		{"drop the materialized views", dropViews},
		{"set the version-1 tables aside", setAside},
		{"copy events into events_local", func(ctx context.Context, db *sql.DB) error { return copyEvents(ctx, db, l) }},
		{"rebuild the rollup into events_hourly_local", rebuildRollup},
		{"carry event_ids over into event_ids_local", func(ctx context.Context, db *sql.DB) error { return carryEventIDs(ctx, db, l) }},
		{"create the materialized views", createViews},
		{"create the Distributed tables", func(ctx context.Context, db *sql.DB) error { return createDistributed(ctx, db, l) }},
		{"drop the version-1 tables", dropV1},
	}
}

// eventColumns are the columns of events in both versions; version 2 adds stream_part and
// commit_seqs.
const eventColumns = `tenant_id, event_id, type, name, user_id, anonymous_id, campaign_id, variant, value_micros, currency,
	event_date, event_time, event_ms, client_ms, received_ms, prop_keys, prop_values, ip, user_agent, locale, app, device,
	source, stream_seq`

// createEventsLocal is the events table of a shard, created under the name given.
const createEventsLocal = `CREATE TABLE %s (
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
	stream_part UInt16,
	stream_seq UInt64,
	commit_seqs Array(UInt64)
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(event_date)
ORDER BY (tenant_id, campaign_id, event_time, event_id)`

// partExpr is an event's stream partition in SQL: natsjs.Partition, which computes the same.
var partExpr = fmt.Sprintf(`toUInt16(cityHash64(concat(tenant_id, '\0', if(user_id != '', user_id, anonymous_id))) %% %d)`, natsjs.Partitions)

// createRollupLocal is the rollup of a shard. Its granules are small because a query
// deserializes the distinct-user states of whole granules: a campaign's week is about 1,500
// rows, which 8,192-row granules would pad with others'.
const createRollupLocal = `CREATE TABLE %s (
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

// rollupColumns and rollupSelect are the rollup's columns and how rows of events_local become
// them: the materialized view's query, and the rebuild's. Commit rows are left out.
const (
	rollupColumns = `tenant_id, campaign_id, hour, variant, type, currency, events, value_micros, users, users_approx`
	rollupSelect  = `SELECT tenant_id, campaign_id, toStartOfHour(event_time) AS hour, variant, type, currency,
	countState() AS events, sumState(value_micros) AS value_micros,
	uniqExactState(if(user_id != '', user_id, anonymous_id)) AS users,
	uniqCombinedState(if(user_id != '', user_id, anonymous_id)) AS users_approx
FROM events_local WHERE tenant_id != ''`
	rollupGroupBy = ` GROUP BY tenant_id, campaign_id, hour, variant, type, currency`
)

// RollupColumns, RollupSelect and RollupGroupBy are the rollup's columns, the materialized
// view's SELECT over events_local (ending in a WHERE clause, to which conditions can be added
// with AND) and its GROUP BY: what a rebuild of rollup rows from the raw events runs, so that it
// computes exactly what the view does (clickhouse.Queries.RebuildHours).
const (
	RollupColumns = rollupColumns
	RollupSelect  = rollupSelect
	RollupGroupBy = rollupGroupBy
)

// createEventIDsLocal is the shard's table of stored event ids by the UTC day they were
// received: the writer confirms a repeated id against it and drops its partitions after its
// dedup window. Small granules: the writer looks up a few ids at a time.
const createEventIDsLocal = `CREATE TABLE %s (
	tenant_id String,
	event_id String,
	day Date
) ENGINE = MergeTree()
PARTITION BY day
ORDER BY (tenant_id, event_id)
SETTINGS index_granularity = 1024`

// The materialized views; each runs on every insert into events_local, in the same INSERT.
// The day is UTC whatever the server's zone, from received_ms: the dedup window runs by arrival,
// not by the event's own (client) time.
const (
	createRollupView   = `CREATE MATERIALIZED VIEW IF NOT EXISTS events_hourly_mv TO events_hourly_local AS ` + rollupSelect + rollupGroupBy
	createEventIDsView = `CREATE MATERIALIZED VIEW IF NOT EXISTS event_ids_mv TO event_ids_local AS
SELECT tenant_id, event_id, toDate(toDateTime(intDiv(received_ms, 1000), 'UTC')) AS day FROM events_local WHERE tenant_id != ''`
)

// checkCluster fails unless the server knows the layout's cluster: the Distributed tables
// cannot be created without it.
func checkCluster(ctx context.Context, db *sql.DB, l Layout) error {
	var shards uint64
	if err := db.QueryRowContext(ctx, `SELECT count() FROM system.clusters WHERE cluster = ?`, l.Cluster).Scan(&shards); err != nil {
		return fmt.Errorf("read system.clusters: %w", err)
	}
	if shards == 0 {
		return fmt.Errorf("cluster %q is not in system.clusters: configure remote_servers (deploy/clickhouse) on every shard", l.Cluster)
	}
	if l.ShardIndex < 0 || l.ShardIndex >= l.ShardCount {
		return fmt.Errorf("shard %d of %d does not exist", l.ShardIndex, l.ShardCount)
	}
	return nil
}

// dropViews drops the version-3 views first: they are recreated last, on the _local tables. No
// writer runs during migrations, so no insert misses them.
func dropViews(ctx context.Context, db *sql.DB) error {
	return exec(ctx, db, `DROP TABLE IF EXISTS events_hourly_mv`, `DROP TABLE IF EXISTS event_ids_mv`)
}

// setAside renames each version-1 table (events, events_hourly, event_ids: not yet the
// Distributed tables of version 2) to <name>_v1, the source of the copies. Each RENAME is one
// table, so it happened or not.
func setAside(ctx context.Context, db *sql.DB) error {
	for _, t := range []string{"events", "events_hourly", "event_ids"} {
		engine, err := engineOf(ctx, db, t)
		if err != nil {
			return err
		}
		if engine == "" || engine == "Distributed" {
			continue
		}
		if old, err := engineOf(ctx, db, t+"_v1"); err != nil {
			return err
		} else if old != "" {
			return fmt.Errorf("both %s and %s_v1 exist: move one away by hand", t, t)
		}
		if err := exec(ctx, db, `RENAME TABLE `+t+` TO `+t+`_v1`); err != nil {
			return err
		}
	}
	return nil
}

// copyEvents builds events_local in a stage table from events_v1 FINAL, the rows of this
// shard's partitions, starting over from an empty stage (a copy interrupted midway is redone,
// not resumed); checks that it holds exactly those rows of events_v1 FINAL (one per tenant_id
// and event_id, the newest version); adds the commit rows of the moved batches; and renames it.
func copyEvents(ctx context.Context, db *sql.DB, l Layout) error {
	if done, err := tableExists(ctx, db, "events_local"); err != nil || done {
		return err
	}
	if ok, err := tableExists(ctx, db, "events_v1"); err != nil {
		return err
	} else if !ok {
		return errors.New("neither events_local nor events_v1 exists")
	}
	where := ""
	if l.ShardCount > 1 {
		where = fmt.Sprintf(" WHERE %s %% %d = %d", partExpr, l.ShardCount, l.ShardIndex)
	}
	if err := exec(ctx, db, `DROP TABLE IF EXISTS events_local_stage`, fmt.Sprintf(createEventsLocal, "events_local_stage"),
		`INSERT INTO events_local_stage (`+eventColumns+`, stream_part) SELECT `+eventColumns+`, `+partExpr+` FROM events_v1 FINAL`+where); err != nil {
		return err
	}
	if err := sameCount(ctx, db, `SELECT count() FROM events_v1 FINAL`+where, `SELECT count() FROM events_local_stage`); err != nil {
		return err
	}
	// One commit row per stream partition and month, as the writer writes one per insert: its
	// highest sequence and every sequence of the moved rows.
	if err := exec(ctx, db, `INSERT INTO events_local_stage (tenant_id, campaign_id, event_id, event_date, event_time, stream_part, stream_seq, commit_seqs)
		SELECT '', '', 'commit', toStartOfMonth(event_date) AS month, toDateTime(month), stream_part, max(stream_seq), arraySort(groupUniqArray(stream_seq))
		FROM events_local_stage WHERE tenant_id != '' GROUP BY stream_part, month`); err != nil {
		return err
	}
	return exec(ctx, db, `RENAME TABLE events_local_stage TO events_local`)
}

// rebuildRollup builds events_hourly_local from events_local (the moved rows) in a stage
// table, one partition of events_local (a month) at a time so the exact distinct-user states of
// one month at most are in memory, checks that it counts every event once, and renames it.
func rebuildRollup(ctx context.Context, db *sql.DB) error {
	if done, err := tableExists(ctx, db, "events_hourly_local"); err != nil || done {
		return err
	}
	if err := exec(ctx, db, `DROP TABLE IF EXISTS events_hourly_local_stage`, fmt.Sprintf(createRollupLocal, "events_hourly_local_stage")); err != nil {
		return err
	}
	if err := perPartition(ctx, db, `INSERT INTO events_hourly_local_stage (`+rollupColumns+`) `+rollupSelect, rollupGroupBy); err != nil {
		return err
	}
	if err := sameCount(ctx, db, `SELECT count() FROM events_local WHERE tenant_id != ''`, `SELECT countMerge(events) FROM events_hourly_local_stage`); err != nil {
		return err
	}
	return exec(ctx, db, `RENAME TABLE events_hourly_local_stage TO events_hourly_local`)
}

// carryEventIDs builds event_ids_local from event_ids_v1 in a stage table — each key once,
// under the latest day it was received, and on a shard of several only the keys of its events —
// checks the count and renames it. Version 3's event_ids holds the keys of the last days only
// (its migration copied a week), which is what the dedup window needs.
func carryEventIDs(ctx context.Context, db *sql.DB, l Layout) error {
	if done, err := tableExists(ctx, db, "event_ids_local"); err != nil || done {
		return err
	}
	if ok, err := tableExists(ctx, db, "event_ids_v1"); err != nil {
		return err
	} else if !ok {
		return errors.New("neither event_ids_local nor event_ids_v1 exists")
	}
	source := `SELECT tenant_id, event_id, max(day) AS day FROM event_ids_v1`
	if l.ShardCount > 1 {
		source += ` WHERE (tenant_id, event_id) IN (SELECT tenant_id, event_id FROM events_local WHERE tenant_id != '')`
	}
	source += ` GROUP BY tenant_id, event_id`
	if err := exec(ctx, db, `DROP TABLE IF EXISTS event_ids_local_stage`, fmt.Sprintf(createEventIDsLocal, "event_ids_local_stage"),
		`INSERT INTO event_ids_local_stage (tenant_id, event_id, day) `+source); err != nil {
		return err
	}
	if err := sameCount(ctx, db, `SELECT count() FROM (`+source+`)`, `SELECT count() FROM event_ids_local_stage`); err != nil {
		return err
	}
	return exec(ctx, db, `RENAME TABLE event_ids_local_stage TO event_ids_local`)
}

func createViews(ctx context.Context, db *sql.DB) error {
	return exec(ctx, db, createRollupView, createEventIDsView)
}

// createDistributed creates events and events_hourly over the cluster's _local tables, rows
// sharded by stream partition. The database is a literal: the table would store an expression
// such as currentDatabase() as such.
func createDistributed(ctx context.Context, db *sql.DB, l Layout) error {
	var name string
	if err := db.QueryRowContext(ctx, `SELECT currentDatabase()`).Scan(&name); err != nil {
		return fmt.Errorf("read the database's name: %w", err)
	}
	return exec(ctx, db,
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS events AS events_local ENGINE = Distributed(%s, %s, events_local, stream_part)`, quoteIdent(l.Cluster), quote(name)),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS events_hourly AS events_hourly_local ENGINE = Distributed(%s, %s, events_hourly_local)`, quoteIdent(l.Cluster), quote(name)))
}

// dropV1 drops the version-1 tables once everything was moved and checked.
func dropV1(ctx context.Context, db *sql.DB) error {
	return exec(ctx, db, `DROP TABLE IF EXISTS events_v1`, `DROP TABLE IF EXISTS events_hourly_v1`, `DROP TABLE IF EXISTS event_ids_v1`)
}

func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func quoteIdent(s string) string {
	return "`" + strings.NewReplacer(`\`, `\\`, "`", "\\`").Replace(s) + "`"
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

// perPartition runs insertSelect (an INSERT … SELECT … FROM events_local WHERE …) once per
// partition of events_local, adding the partition's condition and then tail.
func perPartition(ctx context.Context, db *sql.DB, insertSelect, tail string) error {
	rows, err := db.QueryContext(ctx, `SELECT DISTINCT partition FROM system.parts
		WHERE database = currentDatabase() AND table = 'events_local' AND active ORDER BY partition`)
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
		if err := exec(ctx, db, fmt.Sprintf("%s AND toYYYYMM(event_date) = %d%s", insertSelect, m, tail)); err != nil {
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

// engineOf is table's engine ("" when there is no such table).
func engineOf(ctx context.Context, db *sql.DB, table string) (string, error) {
	var engine string
	err := db.QueryRowContext(ctx, `SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = ?`, table).Scan(&engine)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the engine of %s: %w", table, err)
	}
	return engine, nil
}

func tableExists(ctx context.Context, db *sql.DB, table string) (bool, error) {
	var n uint64
	if err := db.QueryRowContext(ctx, `SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?`, table).Scan(&n); err != nil {
		return false, fmt.Errorf("look for table %s: %w", table, err)
	}
	return n > 0, nil
}
