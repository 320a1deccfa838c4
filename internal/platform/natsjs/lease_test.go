package natsjs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
)

// Short lease times: TTL 1.5 s, refresh every 200 ms, held for 1 s after the last refresh.
var shortLease = natsjs.WithLeaseTimes(1500*time.Millisecond, 200*time.Millisecond, time.Second)

func jsAt(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, js, err := natsjs.Connect(url, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return js
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// One process per writer index: another identity is refused while the holder refreshes, and
// gets the index once the holder closes its lease; indexes are independent.
func TestWriterLeaseIsExclusive(t *testing.T) {
	url := natstest.Start(t)
	ctx := context.Background()
	acquired := time.Now()
	a, err := natsjs.AcquireWriterLease(ctx, jsAt(t, url), 0, "host-a/1/t0", shortLease)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Held() {
		t.Fatal("a fresh lease is not held")
	}
	other := jsAt(t, url)
	if _, err := natsjs.AcquireWriterLease(ctx, other, 0, "host-b/1/t0", shortLease); !errors.Is(err, natsjs.ErrWriterLeaseHeld) {
		t.Fatalf("another identity on a held index: %v, want ErrWriterLeaseHeld", err)
	}
	b1, err := natsjs.AcquireWriterLease(ctx, other, 1, "host-b/1/t0", shortLease)
	if err != nil {
		t.Fatalf("another index: %v", err)
	}
	defer b1.Close()
	// Held past the TTL of its first write: the refreshes rewrote the key since.
	kv, err := other.KeyValue(ctx, natsjs.WriterLeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 5*time.Second, func() bool {
		e, err := kv.Get(ctx, "w0")
		return err == nil && e.Created().After(acquired.Add(1500*time.Millisecond))
	}, "the lease was not refreshed past its first TTL")
	if !a.Held() || isClosed(a.Lost()) {
		t.Fatal("a refreshed lease was lost")
	}
	if _, err := natsjs.AcquireWriterLease(ctx, other, 0, "host-b/1/t0", shortLease); !errors.Is(err, natsjs.ErrWriterLeaseHeld) {
		t.Fatalf("another identity after the TTL with the holder refreshing: %v, want ErrWriterLeaseHeld", err)
	}
	a.Close()
	if a.Held() {
		t.Fatal("a closed lease is held")
	}
	b0, err := natsjs.AcquireWriterLease(ctx, other, 0, "host-b/1/t0", shortLease)
	if err != nil {
		t.Fatalf("another identity once the holder closed: %v", err)
	}
	b0.Close()
}

// A process restarted with its identity (kill -9, then the same hostname, pid and start
// recorded) takes its index back at once; the lease of the old instance, still running
// somewhere, is lost: its next refresh finds the key rewritten.
func TestWriterLeaseSameIdentityTakesItBackAtOnce(t *testing.T) {
	url := natstest.Start(t)
	ctx := context.Background()
	// Held far longer than the test waits: the old lease is lost by its refresh finding the
	// key rewritten, not by its hold time passing.
	long := natsjs.WithLeaseTimes(time.Minute, 100*time.Millisecond, 50*time.Second)
	old, err := natsjs.AcquireWriterLease(ctx, jsAt(t, url), 2, "host-a/7/t0", long)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	again, err := natsjs.AcquireWriterLease(ctx, jsAt(t, url), 2, "host-a/7/t0", long)
	if err != nil {
		t.Fatalf("the same identity: %v", err)
	}
	defer again.Close()
	meshtest.Eventually(t, 5*time.Second, func() bool { return isClosed(old.Lost()) && !old.Held() }, "the overtaken lease was not lost")
	if !again.Held() {
		t.Fatal("the lease taken back is not held")
	}
}

// A holder killed without closing (its connection gone) keeps the index until the TTL: another
// identity is refused at first and takes it once the key lapsed.
func TestWriterLeaseLapsesAfterTheTTL(t *testing.T) {
	url := natstest.Start(t)
	ctx := context.Background()
	nc, js, err := natsjs.Connect(url, "killed")
	if err != nil {
		t.Fatal(err)
	}
	dead, err := natsjs.AcquireWriterLease(ctx, js, 0, "host-a/1/t0", shortLease)
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	nc.Close() // kill -9: no more refreshes, no delete
	other := jsAt(t, url)
	if _, err := natsjs.AcquireWriterLease(ctx, other, 0, "host-b/1/t0", shortLease); !errors.Is(err, natsjs.ErrWriterLeaseHeld) {
		t.Fatalf("another identity right after the holder died: %v, want ErrWriterLeaseHeld", err)
	}
	var next *natsjs.WriterLease
	meshtest.Eventually(t, 10*time.Second, func() bool {
		next, err = natsjs.AcquireWriterLease(ctx, other, 0, "host-b/1/t0", shortLease)
		return err == nil
	}, "another identity never took the lapsed lease: %v", err)
	defer next.Close()
	if dead.Held() || !isClosed(dead.Lost()) {
		t.Fatal("the dead holder's lease is still held")
	}
}

// A holder that cannot refresh (NATS down) stops counting on its lease after the hold time,
// before the key lapses for others.
func TestWriterLeaseIsNotHeldWhenRefreshesFail(t *testing.T) {
	ns := natstest.StartServer(t)
	l, err := natsjs.AcquireWriterLease(context.Background(), jsAt(t, ns.ClientURL()), 0, "host-a/1/t0", shortLease)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !l.Held() {
		t.Fatal("a fresh lease is not held")
	}
	ns.Shutdown()
	meshtest.Eventually(t, 5*time.Second, func() bool { return !l.Held() && isClosed(l.Lost()) }, "the lease is still held with NATS down")
}
