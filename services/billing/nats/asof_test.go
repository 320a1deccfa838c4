package nats

import (
	"context"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/usage"
)

// TestAcceptedAsOfStopsAtTheOldestBatchNotYetWritten: the as-of time of the accepted units is
// unknown (zero) until the consumer has caught up with USAGE; then it follows the time, but
// never passes the oldest batch still in the event stream (a writer has not published its
// units yet); once that batch is gone it moves on. Quotas published with a later as-of would
// let ingest forget units billing has not counted.
func TestAcceptedAsOfStopsAtTheOldestBatchNotYetWritten(t *testing.T) {
	ctx := context.Background()
	js := connect(t)
	store := openStore(t)
	if _, err := usage.EnsureStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	if err := natsjs.EnsureStreams(ctx, js, natsjs.DefaultStream); err != nil {
		t.Fatal(err)
	}
	c := NewUsageConsumer(js, store, ConsumerConfig{Fetch: 10, AckWait: time.Second}, quiet)
	if got := c.AcceptedAsOf(time.Now()); !got.IsZero() {
		t.Fatalf("as-of before any fetch = %v, want zero (unknown)", got)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = c.Run(runCtx) }()

	started := time.Now()
	meshtest.Eventually(t, 15*time.Second, func() bool { return c.AcceptedAsOf(time.Now()).After(started) },
		"as-of did not follow the time with nothing pending")

	before := time.Now()
	if _, err := natsjs.PublishPart(ctx, js, "t1", 0, "batch-1", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, natsjs.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oldest := info.State.FirstTime
	// Several fetches find USAGE drained meanwhile: as-of must stay at the batch.
	drains := func() int { c.mu.Lock(); defer c.mu.Unlock(); return c.drains }
	seen := drains()
	meshtest.Eventually(t, 15*time.Second, func() bool { return drains() >= seen+3 }, "the consumer did not fetch again")
	if got := c.AcceptedAsOf(time.Now()); got.After(oldest) || got.Before(before.Add(-time.Minute)) {
		t.Fatalf("as-of = %v with a batch of %v still in the stream: want at most the batch's time", got, oldest)
	}
	// The writer takes the batch (after publishing its units): as-of moves on.
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 15*time.Second, func() bool { return c.AcceptedAsOf(time.Now()).After(oldest.Add(time.Second)) },
		"as-of did not move on after the batch was written")
}
