package clickhouse_test

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// Stored finds the batches that have rows, and only those; Settle's watermark is the highest.
func TestSinkTellsWhichBatchesAreStored(t *testing.T) {
	conn := open(t, nil, 0)
	insert(t, conn, dataset[:2], 5)
	insert(t, conn, dataset[2:4], 7)
	sink := clickhouse.NewEventSink(conn)
	ctx := context.Background()
	if w, err := sink.Settle(ctx); err != nil || w != 7 {
		t.Fatalf("Settle = %d, %v; want 7", w, err)
	}
	got, err := sink.Stored(ctx, []uint64{4, 5, 6, 7, 8})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, []uint64{5, 7}) {
		t.Errorf("Stored = %v, want [5 7]", got)
	}
	if got, err := sink.Stored(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("Stored(nil) = %v, %v", got, err)
	}
}

// Every insert into events lands in event_ids within the same INSERT (its materialized view),
// by the UTC day the event was received — not its own time, which may be days older.
func TestInsertedEventsLandInEventIDsByDayReceived(t *testing.T) {
	conn := open(t, nil, 0)
	ctx := context.Background()
	old := timestamppb.New(at("2026-03-01T12:00:00Z"))
	var rows []writer.Row
	for _, e := range []struct{ tenant, id, received string }{
		{"t1", "late", "2026-03-28T23:59:59.999Z"},
		{"t1", "midnight", "2026-03-29T00:00:00Z"},
		{"t2", "late", "2026-03-29T10:00:00Z"},
	} {
		rows = append(rows, writer.Row{Seq: 1, Event: &ingestv1.AcceptedEvent{TenantId: e.tenant, ReceivedAt: timestamppb.New(at(e.received)),
			CorrectedTime: old, Event: &ingestv1.Event{EventId: e.id, Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: "u"}}})
	}
	if err := clickhouse.NewEventSink(conn).Insert(ctx, rows); err != nil {
		t.Fatal(err)
	}
	got, err := conn.Query(ctx, `SELECT tenant_id, event_id, toString(day) FROM event_ids ORDER BY tenant_id, event_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	var ids []string
	for got.Next() {
		var tenant, id, day string
		if err := got.Scan(&tenant, &id, &day); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tenant+" "+id+" "+day)
	}
	want := []string{"t1 late 2026-03-28", "t1 midnight 2026-03-29", "t2 late 2026-03-29"}
	if !slices.Equal(ids, want) {
		t.Errorf("event_ids = %q, want %q", ids, want)
	}
}
