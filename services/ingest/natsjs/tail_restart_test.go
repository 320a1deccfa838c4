package natsjs_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/services/ingest"
	ingestjs "github.com/campaignmesh/campaignmesh/services/ingest/natsjs"
)

// testTailLimits leave room for the other instances' answers on a busy machine (the default
// wait is 250 ms).
var testTailLimits = func() ingest.TailLimits {
	l := ingest.DefaultTailLimits
	l.HistoryWait = 2 * time.Second
	return l
}()

// openRelay connects to url as its own client and opens a tail relay until the test ends.
func openRelay(t *testing.T, ctx context.Context, url, name string) (*ingestjs.TailRelay, *nats.Conn) {
	t.Helper()
	nc, js, err := natsjs.Connect(url, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r, err := ingestjs.OpenTailRelay(ctx, nc, js, ingest.NewTails(testTailLimits))
	if err != nil {
		t.Fatalf("%s opens the tail relay: %v", name, err)
	}
	return r, nc
}

// receives reports whether tl receives the outcome of event id from the other instance,
// published by from, within a few seconds.
func receives(t *testing.T, from *ingestjs.TailRelay, tl *ingest.Tail, id string) bool {
	t.Helper()
	from.Publish(tl.Tenant(), []*ingest.TailOutcome{{Outcome: ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED, EventId: id}})
	deadline := time.After(3 * time.Second)
	for {
		select {
		case o := <-tl.Outcomes():
			if o.GetEventId() == id {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// The relay keeps working across a NATS restart (same port, same store): a tail opened before
// goes on receiving the other instance's outcomes, and a tail opened after is heard of through
// the bucket's watch within seconds (not the 10-20 s nats.go takes to notice its watch's
// consumer is gone), so the other instance publishes to it.
func TestTailRelaySurvivesANATSRestart(t *testing.T) {
	store := t.TempDir()
	ns := natstest.StartServerWith(t, func(o *server.Options) { o.StoreDir = store })
	_, portText, _ := net.SplitHostPort(ns.Addr().String())
	port, _ := strconv.Atoi(portText)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	a, ncA := openRelay(t, ctx, ns.ClientURL(), "ingest-a")
	b, ncB := openRelay(t, ctx, ns.ClientURL(), "ingest-b")

	before, err := a.Open("before")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(before)
	meshtest.Eventually(t, 10*time.Second, func() bool { return b.Watching("before") }, "B never heard of the tail")

	ns.Shutdown()
	ns.WaitForShutdown()
	natstest.StartServerWith(t, func(o *server.Options) { o.StoreDir, o.Port = store, port })
	meshtest.Eventually(t, 10*time.Second, func() bool { return ncA.IsConnected() && ncB.IsConnected() }, "the relays did not reconnect")
	restarted := time.Now()

	meshtest.Eventually(t, 10*time.Second, func() bool { return receives(t, b, before, "after-restart") },
		"a tail opened before the restart no longer receives the other instance's outcomes")
	after, err := a.Open("after")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(after)
	meshtest.Eventually(t, 5*time.Second, func() bool { return b.Watching("after") },
		"B did not hear of a tail opened after the restart within 5 s")
	if !receives(t, b, after, "to-new-tail") {
		t.Fatal("a tail opened after the restart does not receive the other instance's outcomes")
	}
	t.Logf("heard of the new tail %s after NATS came back", time.Since(restarted).Round(100*time.Millisecond))

	// And B still answers a tail's request for the recent outcomes it recorded.
	jsB, err := jetstream.New(ncB)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsjs.EnsureStreams(ctx, jsB, natsjs.DefaultStream); err != nil {
		t.Fatal(err)
	}
	svcB := ingest.NewService(ingestjs.NewPublisher(jsB, nil), ingest.DefaultLimits, ingest.DefaultRateLimits).WithTails(b)
	if _, err := svcB.Ingest(ctx, "after", "key-1", []*ingestv1.Event{{EventId: "recorded-by-b", Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: "u"}}, 100); err != nil {
		t.Fatal(err)
	}
	if recent := a.Recent(ctx, "after"); len(recent) != 1 || recent[0].GetEventId() != "recorded-by-b" {
		t.Fatalf("after the restart A gathered %v, want B's recent outcome", recent)
	}
}
