package natsjs_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/services/ingest"
	ingestjs "github.com/campaignmesh/campaignmesh/services/ingest/natsjs"
)

// The real deploy/nats.conf: two ingest instances relay a tail's outcomes with the ingest
// user's rights alone (create and watch the tail bucket, keep a key alive, publish and
// subscribe on debug.events.*), without a permission violation; the gateway cannot listen in.
func TestTailRelayRights(t *testing.T) {
	srv, users := natstest.StartSecured(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ncA, jsA, errsA := natstest.ConnectAs(t, srv.ClientURL(), users.Ingest)
	ncB, jsB, errsB := natstest.ConnectAs(t, srv.ClientURL(), users.Ingest)
	a, err := ingestjs.OpenTailRelay(ctx, ncA, jsA, ingest.NewTails(testTailLimits))
	if err != nil {
		t.Fatalf("ingest A opens the tail relay: %v", err)
	}
	b, err := ingestjs.OpenTailRelay(ctx, ncB, jsB, ingest.NewTails(testTailLimits))
	if err != nil {
		t.Fatalf("ingest B opens the tail relay: %v", err)
	}
	gw, _, gwErrs := natstest.ConnectAs(t, srv.ClientURL(), users.Gateway)
	if _, err := gw.Subscribe("debug.events.>", func(*nats.Msg) { t.Error("the gateway heard a tail") }); err != nil {
		t.Fatal(err)
	}
	_ = gw.Flush()

	tl, err := a.Open("t1")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(tl)
	meshtest.Eventually(t, 10*time.Second, func() bool { return b.Watching("t1") }, "ingest B never heard of the tail")
	out := &ingestv1.TailEventsResponse{Outcome: ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED, EventId: "e1"}
	b.Publish("t1", []*ingest.TailOutcome{out})
	select {
	case got := <-tl.Outcomes():
		if got.GetEventId() != "e1" {
			t.Fatalf("got %v", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("B's outcome never reached A's tail")
	}
	// A tail opening on A gathers the recent outcomes B recorded: a request on
	// debug.history.<tenant>, answered on A's inbox.
	if err := natsjs.EnsureStreams(ctx, jsB, natsjs.DefaultStream); err != nil {
		t.Fatal(err)
	}
	svcB := ingest.NewService(ingestjs.NewPublisher(jsB, nil), ingest.DefaultLimits, ingest.DefaultRateLimits).WithTails(b)
	if _, err := svcB.Ingest(ctx, "t1", "key-1", []*ingestv1.Event{{EventId: "recent-1", Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: "u"}}, 100); err != nil {
		t.Fatal(err)
	}
	recent := a.Recent(ctx, "t1")
	if len(recent) != 1 || recent[0].GetEventId() != "recent-1" {
		t.Fatalf("A gathered %v, want B's recent outcome", recent)
	}
	for name, errs := range map[string]func() []error{"ingest A": errsA, "ingest B": errsB} {
		if e := errs(); len(e) > 0 {
			t.Errorf("%s: %v", name, e)
		}
	}
	meshtest.Eventually(t, 5*time.Second, func() bool { return len(gwErrs()) > 0 }, "the gateway's subscription to debug.events.> was not refused")
	// Nor can it ask for a tenant's recent outcomes.
	if err := gw.Publish(ingestjs.HistorySubject("t1"), nil); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 5*time.Second, func() bool {
		for _, err := range gwErrs() {
			if strings.Contains(err.Error(), ingestjs.HistorySubject("t1")) {
				return true
			}
		}
		return false
	}, "the gateway's request on %s was not refused", ingestjs.HistorySubject("t1"))
}
