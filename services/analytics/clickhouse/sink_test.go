package clickhouse_test

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// Settle's watermarks are per stream partition and month, from the commit rows of the inserts;
// Stored finds the batches a commit of the partition and month lists, and only those.
func TestSinkTellsWhichBatchesAreStored(t *testing.T) {
	conn := open(t, nil, 0)
	sink := clickhouse.NewEventSink(conn)
	ctx := context.Background()
	row := func(part int, seq uint64, e ev) writer.Row {
		r := rowsOf([]ev{e}, seq)[0]
		r.Part = part
		return r
	}
	march, april := dataset[0], ev{"t1", "a1", "click", "tap", "u1", "", "c1", "a", "2026-04-02T10:00:00Z", 0, "", ""}
	for _, b := range []struct {
		month   uint32
		rows    []writer.Row
		commits []writer.Commit
	}{
		{202603, []writer.Row{row(1, 5, march), row(2, 5, march)}, []writer.Commit{{Part: 1, Seqs: []uint64{5}}, {Part: 2, Seqs: []uint64{5}}}},
		{202603, []writer.Row{row(1, 6, march), row(1, 7, march)}, []writer.Commit{{Part: 1, Seqs: []uint64{6, 7}}}},
		{202604, []writer.Row{row(1, 9, april)}, []writer.Commit{{Part: 1, Seqs: []uint64{9}}}},
	} {
		if err := sink.Insert(ctx, b.month, b.rows, b.commits); err != nil {
			t.Fatal(err)
		}
	}
	w, err := sink.Settle(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[writer.PartMonth]uint64{{Part: 1, Month: 202603}: 7, {Part: 2, Month: 202603}: 5, {Part: 1, Month: 202604}: 9}
	if !maps.Equal(w, want) {
		t.Errorf("Settle = %v, want %v", w, want)
	}
	if w, err := sink.Settle(ctx, []int{2, 3}); err != nil || !maps.Equal(w, map[writer.PartMonth]uint64{{Part: 2, Month: 202603}: 5}) {
		t.Errorf("Settle(2, 3) = %v, %v; want partition 2's only", w, err)
	}
	for _, c := range []struct {
		pm   writer.PartMonth
		want []uint64
	}{
		{writer.PartMonth{Part: 1, Month: 202603}, []uint64{5, 6, 7}},
		{writer.PartMonth{Part: 2, Month: 202603}, []uint64{5}},
		{writer.PartMonth{Part: 1, Month: 202604}, []uint64{9}},
		{writer.PartMonth{Part: 3, Month: 202603}, nil},
	} {
		got, err := sink.Stored(ctx, c.pm, []uint64{4, 5, 6, 7, 8, 9})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("Stored(%v) = %v, want %v", c.pm, got, c.want)
		}
	}
	if got, err := sink.Stored(ctx, writer.PartMonth{Part: 1, Month: 202603}, nil); err != nil || len(got) != 0 {
		t.Errorf("Stored(nil) = %v, %v", got, err)
	}
	// A block holding a row of another month would be two parts: refused.
	if err := sink.Insert(ctx, 202603, []writer.Row{row(1, 10, april)}, []writer.Commit{{Part: 1, Seqs: []uint64{10}}}); err == nil {
		t.Error("an insert of an April event into the block of March succeeded")
	}
	// The refused block's INSERT is not left open on the server, where Settle would wait for it.
	settleCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := sink.Settle(settleCtx, nil); err != nil {
		t.Errorf("Settle after a refused block: %v", err)
	}
	// The commit rows are no events: not in the rollup, not in event_ids.
	if got := [3]uint64{scalar(t, conn, `SELECT count() FROM events WHERE tenant_id != ''`), scalar(t, conn, `SELECT countMerge(events) FROM events_hourly`),
		scalar(t, conn, `SELECT count() FROM event_ids_local`)}; got != [3]uint64{5, 5, 5} {
		t.Errorf("events, rollup, event_ids = %v; want 5 each", got)
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
	if err := clickhouse.NewEventSink(conn).InsertAll(ctx, rows); err != nil {
		t.Fatal(err)
	}
	got, err := conn.Query(ctx, `SELECT tenant_id, event_id, toString(day) FROM event_ids_local ORDER BY tenant_id, event_id`)
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
