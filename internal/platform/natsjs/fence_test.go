package natsjs_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
)

// The real deploy/nats.conf: the analytics user raises fences, watches them, acknowledges them
// as a writer with a lease, and lifts them; Raise returns only once every live writer has
// acknowledged, and no longer waits for a writer whose lease is gone. Ingest and the gateway
// can neither raise nor acknowledge a fence.
func TestFencesWaitForEveryLiveWriter(t *testing.T) {
	srv, users := natstest.StartSecured(t)
	url := srv.ClientURL()
	ctx := context.Background()
	js, errs := connectAs(t, url, users.Analytics)
	logger := slog.New(slog.DiscardHandler)

	kv, err := natsjs.OpenFenceBucket(ctx, js)
	if err != nil {
		t.Fatalf("analytics opens the fence bucket: %v", err)
	}
	view, err := natsjs.WatchFences(ctx, kv, logger)
	if err != nil {
		t.Fatalf("analytics watches the fences: %v", err)
	}
	fencer, err := natsjs.NewFencer(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	// No writer has ever run: nothing to wait for.
	if err := fencer.Raise(ctx, "b0", []string{"t1"}); err != nil {
		t.Fatalf("raise with no writer: %v", err)
	}
	meshtest.Eventually(t, 5*time.Second, func() bool { return view.Fences()["t1"].ID == "b0" }, "the view did not see the fence")
	if err := fencer.Lift(ctx, "b0", []string{"t1"}); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 5*time.Second, func() bool { _, up := view.Fences()["t1"]; return !up }, "the view did not see the lift")

	// Writers 0 and 3 hold leases: Raise waits for both.
	w0, err := natsjs.AcquireWriterLease(ctx, js, 0, "w0", shortLease)
	if err != nil {
		t.Fatal(err)
	}
	defer w0.Close()
	w3, err := natsjs.AcquireWriterLease(ctx, js, 3, "w3", shortLease)
	if err != nil {
		t.Fatal(err)
	}
	raised := make(chan error, 1)
	go func() { raised <- fencer.Raise(ctx, "b1", []string{"t1", "t2"}) }()
	meshtest.Eventually(t, 5*time.Second, func() bool { return view.Fences()["t2"].ID == "b1" }, "the view did not see the fence")
	for _, tenant := range []string{"t1", "t2"} {
		if err := natsjs.AckFence(ctx, kv, tenant, 0, "b1"); err != nil {
			t.Fatalf("writer 0 acknowledges: %v", err)
		}
	}
	if err := natsjs.AckFence(ctx, kv, "t1", 3, "b1"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-raised:
		t.Fatalf("Raise returned (%v) before writer 3 acknowledged tenant t2", err)
	case <-time.After(300 * time.Millisecond):
	}
	// Writer 3 dies: once its lease is gone, Raise no longer waits for it.
	w3.Close()
	select {
	case err := <-raised:
		if err != nil {
			t.Fatalf("Raise: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Raise still waits for a writer whose lease is gone")
	}
	// A raise that no writer acknowledges ends with its context.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := fencer.Raise(short, "b2", []string{"t3"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Raise without acknowledgement: %v, want the deadline", err)
	}
	for _, id := range []string{"b1", "b2"} {
		if err := fencer.Lift(ctx, id, []string{"t1", "t2", "t3"}); err != nil {
			t.Fatal(err)
		}
	}
	meshtest.Eventually(t, 5*time.Second, func() bool { return len(view.Fences()) == 0 }, "fences left after the lifts")
	if _, err := kv.Get(ctx, natsjs.FenceAckKey("t1", 0)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("an acknowledgement is left after the lift: %v", err)
	}
	if got := errs(); len(got) > 0 {
		t.Fatalf("the analytics user hit permission errors: %v", got)
	}

	// Nobody else touches fences.
	for _, u := range []natstest.User{users.Ingest, users.Gateway} {
		other, _ := connectAs(t, url, u)
		value, _ := json.Marshal(natsjs.Fence{ID: "forged", TimeMS: time.Now().UnixMilli()})
		_, _ = other.Conn().Request("$KV."+natsjs.FenceBucket+".fence.t1", value, 500*time.Millisecond)
		_, _ = other.Conn().Request("$KV."+natsjs.FenceBucket+"."+natsjs.FenceAckKey("t1", 0), []byte("forged"), 500*time.Millisecond)
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		if _, err := other.KeyValue(sctx, natsjs.FenceBucket); err == nil {
			t.Fatalf("%s opened the fence bucket", u.Name)
		}
		cancel()
	}
	if _, up := view.Fences()["t1"]; up {
		t.Fatal("a forged fence was raised")
	}
	if _, err := kv.Get(ctx, natsjs.FenceAckKey("t1", 0)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("a forged acknowledgement was stored: %v", err)
	}
}

// A fence's staleness is its last refresh's age.
func TestFenceStale(t *testing.T) {
	now := time.Now()
	if (natsjs.Fence{ID: "b", TimeMS: now.Add(-natsjs.FenceMaxAge + time.Second).UnixMilli()}).Stale(now) {
		t.Fatal("a fence refreshed within FenceMaxAge is stale")
	}
	if !(natsjs.Fence{ID: "b", TimeMS: now.Add(-natsjs.FenceMaxAge - time.Second).UnixMilli()}).Stale(now) {
		t.Fatal("a fence older than FenceMaxAge is not stale")
	}
}
