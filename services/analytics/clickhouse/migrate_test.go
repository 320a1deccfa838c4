package clickhouse_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse/migrations"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// unversionedSchema is the DDL that Open ran at every start before the schema had versions:
// what an existing dev .state holds.
var unversionedSchema = []string{
	`CREATE TABLE IF NOT EXISTS events (
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
	ORDER BY (tenant_id, event_id)`,
	`CREATE TABLE IF NOT EXISTS events_hourly (
		tenant_id String,
		campaign_id String,
		hour DateTime,
		variant String,
		type String,
		currency String,
		events AggregateFunction(count),
		value_micros AggregateFunction(sum, Int64),
		users AggregateFunction(uniqExact, String)
	) ENGINE = AggregatingMergeTree()
	PARTITION BY toYYYYMM(hour)
	ORDER BY (tenant_id, campaign_id, hour, variant, type, currency)`,
	`CREATE TABLE IF NOT EXISTS writer_epochs (
		stream_created UInt64,
		seq_offset UInt64
	) ENGINE = MergeTree() ORDER BY stream_created`,
	`CREATE MATERIALIZED VIEW IF NOT EXISTS events_hourly_mv TO events_hourly AS
	SELECT tenant_id, campaign_id, toStartOfHour(event_time) AS hour, variant, type, currency,
		countState() AS events, sumState(value_micros) AS value_micros,
		uniqExactState(if(user_id != '', user_id, anonymous_id)) AS users
	FROM events
	GROUP BY tenant_id, campaign_id, hour, variant, type, currency`,
}

// latestVersion is the number of the newest file in migrations/.
const latestVersion = 4

// insertV1 inserts rows into the events table of schema version 1 (to 3), as the writer of those
// versions did: one block.
func insertV1(ctx context.Context, conn driver.Conn, rows []writer.Row) error {
	b, err := conn.PrepareBatch(ctx, `INSERT INTO events (tenant_id, event_id, type, name, user_id, anonymous_id, campaign_id, variant,
		value_micros, currency, event_date, event_time, event_ms, client_ms, received_ms, prop_keys, prop_values,
		ip, user_agent, locale, app, device, source, stream_seq)`)
	if err != nil {
		return err
	}
	for _, r := range rows {
		a := r.Event
		e := a.GetEvent()
		t := a.GetCorrectedTime().AsTime().UTC()
		var keys, values []string
		for k, v := range e.GetProperties().GetFields() {
			keys, values = append(keys, k), append(values, v.GetStringValue())
		}
		c := e.GetContext()
		if err := b.Append(a.GetTenantId(), e.GetEventId(), strings.ToLower(strings.TrimPrefix(e.GetType().String(), "EVENT_TYPE_")), e.GetName(),
			e.GetUserId(), e.GetAnonymousId(), e.GetCampaignId(), e.GetVariant(), e.GetValue().GetAmountMicros(), e.GetValue().GetCurrency(),
			t, t, uint64(t.UnixMilli()), uint64(e.GetTimestamp().AsTime().UnixMilli()), uint64(a.GetReceivedAt().AsTime().UnixMilli()),
			keys, values, c.GetIp(), c.GetUserAgent(), c.GetLocale(), c.GetApp(), c.GetDevice(), a.GetSource(), r.Seq); err != nil {
			return err
		}
	}
	return b.Send()
}

// insertOld is insert into a database of schema version 1 to 3.
func insertOld(t *testing.T, conn driver.Conn, events []ev, seq uint64) {
	t.Helper()
	if err := insertV1(context.Background(), conn, rowsOf(events, seq)); err != nil {
		t.Fatal(err)
	}
}

// connect opens a native connection as the writer user without migrating.
func connect(t *testing.T, db string) driver.Conn {
	t.Helper()
	u := chtest.Writer(t)
	conn, err := ch.Open(&ch.Options{Addr: []string{chtest.Addr()}, Auth: ch.Auth{Database: db, Username: u.Name, Password: u.Password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func scalar(t *testing.T, conn driver.Conn, q string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// schemaOf is the server's own CREATE statement of every table of db, by name, with the
// database name taken out so that two databases compare.
func schemaOf(t *testing.T, conn driver.Conn, db string) map[string]string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT name, create_table_query FROM system.tables WHERE database = ?`, db)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, create string
		if err := rows.Scan(&name, &create); err != nil {
			t.Fatal(err)
		}
		out[name] = strings.ReplaceAll(strings.ReplaceAll(create, db+".", ""), "'"+db+"'", "'DB'")
	}
	return out
}

// contents is what the analytics tables hold.
func contents(t *testing.T, conn driver.Conn) [5]uint64 {
	t.Helper()
	// Commit rows (tenant_id '', since version 4) are the writer's, not events.
	return [5]uint64{
		scalar(t, conn, `SELECT count() FROM events WHERE tenant_id != ''`),
		scalar(t, conn, `SELECT uniqExact(event_id) FROM events WHERE tenant_id != ''`),
		scalar(t, conn, `SELECT countMerge(events) FROM events_hourly`),
		scalar(t, conn, `SELECT toUInt64(sumMerge(value_micros)) FROM events_hourly`),
		scalar(t, conn, `SELECT count() FROM writer_epochs`),
	}
}

func eventRows(seq uint64, ids ...string) []writer.Row {
	now := timestamppb.New(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
	var rows []writer.Row
	for _, id := range ids {
		rows = append(rows, writer.Row{Seq: seq, Event: &ingestv1.AcceptedEvent{TenantId: "t1", ReceivedAt: now, CorrectedTime: now,
			Event: &ingestv1.Event{EventId: id, Type: ingestv1.EventType_EVENT_TYPE_CONVERSION, UserId: "u-" + id, CampaignId: "c1",
				Value: &ingestv1.Money{AmountMicros: 1000, Currency: "USD"}}}})
	}
	return rows
}

// A database created by the unversioned schema (a dev .state from before migrations) migrates
// in place: its rows stay, the rollup view still feeds the rollup, the schema is the one a new
// database gets, and the version is recorded. Running the migrations again changes nothing.
func TestMigrationsAdoptTheUnversionedSchemaInPlace(t *testing.T) {
	ctx := context.Background()
	db, conn := unversionedDatabase(t)
	sink := clickhouse.NewEventSink(conn)
	if err := insertV1(ctx, conn, eventRows(1, "a", "b", "c")); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.SeqOffset(ctx, 42, 1); err != nil {
		t.Fatal(err)
	}
	before := contents(t, conn)
	if before != [5]uint64{3, 3, 3, 3000, 1} {
		t.Fatalf("seeded contents %v", before)
	}

	writerUser := clickhouse.User(chtest.Writer(t))
	if err := clickhouse.Migrate(ctx, chtest.Addr(), db, writerUser); err != nil {
		t.Fatal(err)
	}
	if got := contents(t, conn); got != before {
		t.Fatalf("after migrating: contents %v, want %v", got, before)
	}
	versions := `SELECT count() FROM ` + clickhouse.VersionTable
	if v := scalar(t, conn, `SELECT toUInt64(max(version_id)) FROM `+clickhouse.VersionTable); v != latestVersion {
		t.Fatalf("recorded version %d, want %d", v, latestVersion)
	}
	recorded := scalar(t, conn, versions)

	// The same schema as a database that starts empty.
	fresh := chtest.NewDatabase(t)
	if err := clickhouse.Migrate(ctx, chtest.Addr(), fresh, writerUser); err != nil {
		t.Fatal(err)
	}
	migrated, created := schemaOf(t, conn, db), schemaOf(t, conn, fresh)
	if diff := cmp.Diff(created, migrated); diff != "" {
		t.Fatalf("schema migrated in place differs from a new one (-new +migrated):\n%s", diff)
	}

	// Again: nothing to do.
	if err := clickhouse.Migrate(ctx, chtest.Addr(), db, writerUser); err != nil {
		t.Fatal(err)
	}
	if n := scalar(t, conn, versions); n != recorded {
		t.Fatalf("a second run recorded %d more versions", n-recorded)
	}
	if got := contents(t, conn); got != before {
		t.Fatalf("after a second run: contents %v, want %v", got, before)
	}

	// The view still feeds the rollup.
	if err := sink.InsertAll(ctx, eventRows(2, "d")); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Settle(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := contents(t, conn); got != [5]uint64{4, 4, 4, 4000, 1} {
		t.Fatalf("after an insert into the migrated database: contents %v", got)
	}
}

// unversionedDatabase is a fresh database holding the schema of before migrations.
func unversionedDatabase(t *testing.T) (db string, conn driver.Conn) {
	t.Helper()
	db = chtest.NewDatabase(t)
	conn = connect(t, db)
	for _, q := range unversionedSchema {
		if err := conn.Exec(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	return db, conn
}

// v1Database is a database at schema version 1 holding the query tests' dataset, in which a
// client retry stored three events twice, in a later batch: e1 and e3 of t1 and x1 of t2. v1
// keeps one row of each under FINAL, but its rollup counted them twice.
func v1Database(t *testing.T) (db string, conn driver.Conn) {
	t.Helper()
	ctx := context.Background()
	db = chtest.NewDatabase(t)
	if err := clickhouse.MigrateTo(ctx, chtest.Addr(), db, clickhouse.User(chtest.Writer(t)), 3); err != nil {
		t.Fatal(err)
	}
	conn = connect(t, db)
	insertOld(t, conn, dataset, 1)
	return db, conn
}

// retried are the events of v1Database sent again in another batch (stream sequence 2).
var retried = []ev{dataset[0], dataset[2], dataset[10]}

// answers are the analytics API's answers over the dataset — summaries, series, breakdowns and
// a funnel, from the raw table and from the rollups — with exact or approximate unique users.
func answers(t *testing.T, conn driver.Conn, exact bool) map[string]any {
	t.Helper()
	ctx := context.Background()
	// Named as two shards, the queries read the Distributed tables' names, events and
	// events_hourly: v1's tables before the migration, the Distributed ones after.
	q := newQueries(t, conn, clickhouse.DefaultQueryLimits).WithShards([]driver.Conn{conn, conn})
	svc := analytics.NewService(q, analytics.DefaultLimits)
	start, end := ts("2026-03-28T00:00:00Z"), ts("2026-03-31T00:00:00Z")
	out := map[string]any{}
	check := func(name string, resp any, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = resp
	}
	for _, src := range []analytics.Source{analytics.SourceRaw, analytics.SourceRollup} {
		n := sourceName[src]
		r1, err := svc.Summary(ctx, "t1", analytics.SummaryRequest{CampaignIDs: []string{"c1", "c3", "nope"}, Start: start, End: end, Source: src, ExactUniqueUsers: exact})
		check(n+" summary", r1, err)
		r2, err := svc.Summary(ctx, "t1", analytics.SummaryRequest{CampaignIDs: []string{"c1"}, Start: start, End: end, ByVariant: true, Source: src, ExactUniqueUsers: exact})
		check(n+" summary by variant", r2, err)
		r3, err := svc.Summary(ctx, "t2", analytics.SummaryRequest{CampaignIDs: []string{"c1"}, Start: start, End: end, Source: src, ExactUniqueUsers: exact})
		check(n+" summary of t2", r3, err)
		r4, err := svc.Series(ctx, "t1", analytics.SeriesRequest{CampaignID: "c1", Granularity: analytics.Day, TimeZone: "Europe/Berlin", Start: start, End: end, Source: src, ExactUniqueUsers: exact})
		check(n+" series by day", r4, err)
		r5, err := svc.Series(ctx, "t1", analytics.SeriesRequest{Granularity: analytics.Hour, Start: start, End: end, Source: src, ExactUniqueUsers: exact})
		check(n+" series by hour", r5, err)
		for _, d := range []analytics.Dimension{analytics.Campaign, analytics.Variant, analytics.EventType} {
			r, err := svc.Breakdown(ctx, "t1", analytics.BreakdownRequest{Dimension: d, Metric: analytics.MetricUniqueUsers, Start: start, End: end, Source: src, ExactUniqueUsers: exact})
			check(fmt.Sprintf("%s breakdown by %d", n, d), r, err)
		}
	}
	for _, d := range []analytics.Dimension{analytics.Property, analytics.EventName, analytics.Device} {
		r, err := svc.Breakdown(ctx, "t1", analytics.BreakdownRequest{Dimension: d, PropertyKey: "country", Metric: analytics.MetricEvents, Start: start, End: end, ExactUniqueUsers: exact})
		check(fmt.Sprintf("breakdown by %d", d), r, err)
	}
	f, err := svc.Funnel(ctx, "t1", analytics.FunnelRequest{WindowSeconds: 3600, Start: start, End: end,
		Steps: []analytics.FunnelStep{{EventName: "view"}, {EventName: "tap"}, {EventName: "purchase"}}})
	check("funnel", f, err)
	return out
}

// A populated version-1 events table moves into the new shape with every event once (the
// newest version of a retried one), the rollup rebuilt to count exactly that, event_ids
// filled, and every query answering as before.
func TestMigrationMovesAPopulatedV1TableOnce(t *testing.T) {
	ctx := context.Background()
	db, conn := v1Database(t)
	// Before the retries, v1 has no repeated event: its answers are the truth (the queries
	// read v1's rollup, exact users only, and its raw table without FINAL, as they do v2's).
	before := answers(t, conn, true)
	insertOld(t, conn, retried, 2)
	if got := [3]uint64{scalar(t, conn, `SELECT count() FROM events WHERE tenant_id != ''`), scalar(t, conn, `SELECT count() FROM events FINAL`),
		scalar(t, conn, `SELECT countMerge(events) FROM events_hourly`)}; got != [3]uint64{14, 11, 14} {
		t.Fatalf("v1 holds %v rows (raw, FINAL, rollup), want the retries twice in raw and rollup", got)
	}

	if err := clickhouse.Migrate(ctx, chtest.Addr(), db, clickhouse.User(chtest.Writer(t))); err != nil {
		t.Fatal(err)
	}
	requireMoved(t, conn)
	if v := scalar(t, conn, `SELECT max(stream_seq) FROM events WHERE tenant_id != '' AND event_id IN ('e1', 'e3', 'x1')`); v != 2 {
		t.Errorf("a retried event kept stream_seq %d, want the newest (2)", v)
	}
	for _, exact := range []bool{true, false} {
		if d := cmp.Diff(before, answers(t, conn, exact)); d != "" {
			t.Errorf("answers after the migration (exact users %v) differ (-before +after):\n%s", exact, d)
		}
	}
}

// requireMoved checks a database migrated from v1Database: the dataset's 11 events once in
// events, in the rollup and in event_ids, in the version-2 tables, with no table of the move
// left behind.
func requireMoved(t *testing.T, conn driver.Conn) {
	t.Helper()
	got := [5]uint64{
		scalar(t, conn, `SELECT count() FROM events WHERE tenant_id != ''`),
		scalar(t, conn, `SELECT uniqExact(tenant_id, event_id) FROM events WHERE tenant_id != ''`),
		scalar(t, conn, `SELECT countMerge(events) FROM events_hourly`),
		scalar(t, conn, `SELECT uniqCombinedMerge(users_approx) FROM events_hourly WHERE tenant_id = 't1'`),
		scalar(t, conn, `SELECT count() FROM event_ids_local`),
	}
	// t1's users: u1, u2, anon-3, u4, u5.
	if got != [5]uint64{11, 11, 11, 5, 11} {
		t.Errorf("events rows, distinct ids, rollup count, t1's approximate users, event_ids rows = %v; want [11 11 11 5 11]", got)
	}
	if key := scalar(t, conn, `SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events_local'
		AND sorting_key = 'tenant_id, campaign_id, event_time, event_id' AND partition_key = 'toYYYYMM(event_date)'`); key != 1 {
		t.Error("events_local is not sorted by (tenant_id, campaign_id, event_time, event_id) and partitioned by month")
	}
	if n := scalar(t, conn, `SELECT count() FROM system.tables WHERE database = currentDatabase() AND engine = 'Distributed' AND name IN ('events', 'events_hourly')`); n != 2 {
		t.Errorf("%d of events and events_hourly are Distributed tables, want both", n)
	}
	if n := scalar(t, conn, `SELECT count() FROM system.tables WHERE database = currentDatabase() AND (name LIKE '%\_v1' OR name LIKE '%\_stage')`); n != 0 {
		t.Errorf("%d tables of the move are left", n)
	}
}

// A migration that died after any of its steps — or inside a RENAME, between its two renames —
// completes on the next start: every event once, the rollup and event_ids rebuilt, the views
// feeding them, and the same schema as a new database.
func TestMigrationCompletesAfterDyingAtAnyStep(t *testing.T) {
	ctx := context.Background()
	writerUser := clickhouse.User(chtest.Writer(t))
	fresh := chtest.NewDatabase(t)
	if err := clickhouse.Migrate(ctx, chtest.Addr(), fresh, writerUser); err != nil {
		t.Fatal(err)
	}
	type death struct {
		name  string
		steps int      // of migrations.EventsV2Steps that completed
		then  []string // statements that completed after them
	}
	steps := migrations.EventsV2Steps(clickhouse.SingleNode)
	var deaths []death
	for i := range len(steps) + 1 {
		name := "before any step"
		if i > 0 {
			name = "after " + steps[i-1].Name
		}
		deaths = append(deaths, death{name: name, steps: i})
	}
	// Deaths inside a step that builds a table: a stage filled halfway is left behind.
	deaths = append(deaths,
		death{name: "inside the copy of events", steps: 3, then: []string{`CREATE TABLE events_local_stage AS events_v1`,
			`INSERT INTO events_local_stage SELECT * FROM events_v1 LIMIT 3`}},
		death{name: "inside the rebuild of the rollup", steps: 4, then: []string{`CREATE TABLE events_hourly_local_stage AS events_hourly_v1`,
			`INSERT INTO events_hourly_local_stage SELECT * FROM events_hourly_v1 LIMIT 3`}},
		death{name: "inside the carry-over of event_ids", steps: 5, then: []string{`CREATE TABLE event_ids_local_stage AS event_ids_v1`,
			`INSERT INTO event_ids_local_stage SELECT * FROM event_ids_v1 LIMIT 3`}})
	for _, d := range deaths {
		t.Run(d.name, func(t *testing.T) {
			db, conn := v1Database(t)
			insertOld(t, conn, retried, 2)
			sqlDB := ch.OpenDB(&ch.Options{Addr: []string{chtest.Addr()}, Auth: ch.Auth{Database: db, Username: writerUser.Name, Password: writerUser.Password}})
			defer sqlDB.Close()
			for _, s := range steps[:d.steps] {
				if err := s.Run(ctx, sqlDB); err != nil {
					t.Fatalf("%s: %v", s.Name, err)
				}
			}
			for _, q := range d.then {
				if _, err := sqlDB.ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}

			if err := clickhouse.Migrate(ctx, chtest.Addr(), db, writerUser); err != nil {
				t.Fatal(err)
			}
			requireMoved(t, conn)
			if diff := cmp.Diff(schemaOf(t, conn, fresh), schemaOf(t, conn, db)); diff != "" {
				t.Errorf("schema differs from a new one (-new +migrated):\n%s", diff)
			}
			insert(t, conn, []ev{{"t1", "e11", "click", "tap", "u9", "", "c2", "", "2026-03-28T12:30:00Z", 0, "", ""}}, 3)
			if got := [3]uint64{scalar(t, conn, `SELECT count() FROM events WHERE tenant_id != ''`), scalar(t, conn, `SELECT countMerge(events) FROM events_hourly`),
				scalar(t, conn, `SELECT count() FROM event_ids_local`)}; got != [3]uint64{12, 12, 12} {
				t.Errorf("after one more insert: events, rollup, event_ids = %v, want 12 each", got)
			}
		})
	}
}

// A version-1 table copied to two servers (two databases here) migrates as the two shards of a
// cluster: each keeps the rows of its stream partitions (stream_part % 2), so every event is
// on one shard once, and the rollups and event_ids of the two count each once.
func TestMigrationSplitsAV1TableIntoShards(t *testing.T) {
	ctx := context.Background()
	writerUser := clickhouse.User(chtest.Writer(t))
	var conns []driver.Conn
	for shard := range 2 {
		db, conn := v1Database(t)
		insertOld(t, conn, retried, 2)
		if err := clickhouse.MigrateShard(ctx, chtest.Addr(), db, writerUser, clickhouse.Layout{ShardIndex: shard, ShardCount: 2}); err != nil {
			t.Fatal(err)
		}
		if n := scalar(t, conn, fmt.Sprintf(`SELECT count() FROM events_local WHERE stream_part %% 2 != %d`, shard)); n != 0 {
			t.Errorf("shard %d holds %d rows of the other shard", shard, n)
		}
		conns = append(conns, conn)
	}
	var got [4]uint64
	for _, conn := range conns {
		got[0] += scalar(t, conn, `SELECT count() FROM events_local WHERE tenant_id != ''`)
		got[1] += scalar(t, conn, `SELECT uniqExact(tenant_id, event_id) FROM events_local WHERE tenant_id != ''`)
		got[2] += scalar(t, conn, `SELECT countMerge(events) FROM events_hourly_local`)
		got[3] += scalar(t, conn, `SELECT count() FROM event_ids_local`)
	}
	if got != [4]uint64{11, 11, 11, 11} {
		t.Errorf("over both shards: rows, distinct events, rollup count, event_ids = %v; want 11 each", got)
	}
	if scalar(t, conns[0], `SELECT count() FROM events_local WHERE tenant_id != ''`) == 0 || scalar(t, conns[1], `SELECT count() FROM events_local WHERE tenant_id != ''`) == 0 {
		t.Error("a shard got no rows: the data set does not test the split")
	}
}
