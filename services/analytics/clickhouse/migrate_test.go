package clickhouse_test

import (
	"context"
	"strings"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
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
const latestVersion = 3

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
		out[name] = strings.ReplaceAll(create, db+".", "")
	}
	return out
}

// contents is what the analytics tables hold.
func contents(t *testing.T, conn driver.Conn) [5]uint64 {
	t.Helper()
	return [5]uint64{
		scalar(t, conn, `SELECT count() FROM events`),
		scalar(t, conn, `SELECT uniqExact(event_id) FROM events`),
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
	db := chtest.NewDatabase(t)
	conn := connect(t, db)
	for _, q := range unversionedSchema {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	sink := clickhouse.NewEventSink(conn)
	if err := sink.Insert(ctx, eventRows(1, "a", "b", "c")); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.SeqOffset(ctx, 42); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Settle(ctx); err != nil { // the rollup is written once the insert ends
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
	if err := sink.Insert(ctx, eventRows(2, "d")); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if got := contents(t, conn); got != [5]uint64{4, 4, 4, 4000, 1} {
		t.Fatalf("after an insert into the migrated database: contents %v", got)
	}
}
