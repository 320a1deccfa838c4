package clickhouse_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// keyRows are rows of the given events, each received at its time.
func keyRows(seq uint64, received time.Time, keys ...writer.EventKey) []writer.Row {
	at := timestamppb.New(received)
	var rows []writer.Row
	for _, k := range keys {
		rows = append(rows, writer.Row{Seq: seq, Event: &ingestv1.AcceptedEvent{TenantId: k.Tenant, ReceivedAt: at, CorrectedTime: at,
			Event: &ingestv1.Event{EventId: k.EventID, Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: "u"}}})
	}
	return rows
}

func sortKeys(keys []writer.EventKey) []writer.EventKey {
	slices.SortFunc(keys, func(a, b writer.EventKey) int {
		return strings.Compare(a.Tenant+"\x00"+a.EventID, b.Tenant+"\x00"+b.EventID)
	})
	return keys
}

// Seen finds exactly the stored events among keys of several tenants — ids with quotes,
// backslashes and SQL in them, and more ids than one query holds — RecentIDs lists the keys
// received within a window, and DropIDsBefore forgets the days older than it, not the rows.
func TestSinkKnowsWhichEventsAreStored(t *testing.T) {
	conn := open(t, nil, 0)
	sink := clickhouse.NewEventSink(conn)
	ctx := context.Background()
	now := time.Now()
	k := func(tenant, id string) writer.EventKey { return writer.EventKey{Tenant: tenant, EventID: id} }
	odd := []writer.EventKey{k("t1", `it's`), k("t1", `back\slash`), k("t1", `x') OR 1=1 --`), k("t1", "?"), k("t2", "e1")}
	var many, manyStored []writer.EventKey // 3,000 ids of 100 bytes: several queries
	for i := range 3000 {
		key := k("t1", fmt.Sprintf("%s-%06d", strings.Repeat("m", 93), i))
		many = append(many, key)
		if i%2 == 0 {
			manyStored = append(manyStored, key)
		}
	}
	recent := slices.Concat(odd, manyStored)
	dayAgo := []writer.EventKey{k("t1", "day-ago")}
	old := []writer.EventKey{k("t1", "five-days-ago"), k("t2", "ten-days-ago")}
	for i, rows := range [][]writer.Row{
		keyRows(1, now, recent...),
		keyRows(2, now.Add(-30*time.Hour), dayAgo...),
		keyRows(3, now.Add(-5*24*time.Hour), old[0]),
		keyRows(4, now.Add(-10*24*time.Hour), old[1]),
	} {
		if err := sink.InsertAll(ctx, rows); err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
	}
	if _, err := sink.Settle(ctx, nil); err != nil {
		t.Fatal(err)
	}

	ask := slices.Concat(odd, many, dayAgo, old, []writer.EventKey{k("t1", "e1"), k("t2", "it's"), k("t3", "nope")})
	got, err := sink.Seen(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	want := sortKeys(slices.Concat(recent, dayAgo, old))
	if got := sortKeys(got); !slices.Equal(got, want) {
		t.Errorf("Seen found %d keys, want the %d stored (first found %v)", len(got), len(want), got[:min(3, len(got))])
	}

	since := now.Add(-48 * time.Hour)
	var listed []writer.EventKey
	if err := sink.RecentIDs(ctx, since, func(k writer.EventKey) { listed = append(listed, k) }); err != nil {
		t.Fatal(err)
	}
	if got, want := sortKeys(listed), sortKeys(slices.Concat(recent, dayAgo)); !slices.Equal(got, want) {
		t.Errorf("RecentIDs listed %d keys, want the %d received within 48 h", len(got), len(want))
	}

	if err := sink.DropIDsBefore(ctx, since); err != nil {
		t.Fatal(err)
	}
	got, err = sink.Seen(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sortKeys(got), sortKeys(slices.Concat(recent, dayAgo)); !slices.Equal(got, want) {
		t.Errorf("after DropIDsBefore Seen found %d keys, want the %d received within 48 h", len(got), len(want))
	}
	if n := scalar(t, conn, `SELECT count() FROM events WHERE tenant_id != ''`); n != uint64(len(recent)+3) {
		t.Errorf("events holds %d rows after DropIDsBefore, want all %d", n, len(recent)+3)
	}
	if got, err := sink.Seen(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("Seen(nil) = %v, %v", got, err)
	}
}

// Events stored before event_ids existed are copied into it by the migration when they are
// recent (the last 7 days), so a retry of one of them is still recognised after the upgrade.
func TestMigrationFillsEventIDsWithRecentEvents(t *testing.T) {
	ctx := context.Background()
	db, conn := unversionedDatabase(t)
	sink := clickhouse.NewEventSink(conn)
	recent := writer.EventKey{Tenant: "t1", EventID: "recent"}
	old := writer.EventKey{Tenant: "t1", EventID: "old"}
	for _, rows := range [][]writer.Row{keyRows(1, time.Now().Add(-time.Hour), recent), keyRows(2, time.Now().Add(-8*24*time.Hour), old)} {
		if err := insertV1(ctx, conn, rows); err != nil {
			t.Fatal(err)
		}
	}
	if err := clickhouse.Migrate(ctx, chtest.Addr(), db, clickhouse.User(chtest.Writer(t))); err != nil {
		t.Fatal(err)
	}
	got, err := sink.Seen(ctx, []writer.EventKey{recent, old})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []writer.EventKey{recent}) {
		t.Errorf("after the migration Seen = %v, want only the event of an hour ago", got)
	}
}
