package clickhouse_test

import (
	"context"
	"slices"
	"testing"

	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
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
