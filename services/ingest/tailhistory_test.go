package ingest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
)

// clock is a settable time for the service and its tails.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time        { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration)   { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }
func newClock() *clock                 { return &clock{t: time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)} }
func ids(outs []*TailOutcome) []string { return mapOutcomes(outs, (*TailOutcome).GetEventId) }

func mapOutcomes(outs []*TailOutcome, f func(*TailOutcome) string) []string {
	out := make([]string, len(outs))
	for i, o := range outs {
		out[i] = f(o)
	}
	return out
}

// tailedService is a Service with tails under limits, on clock c.
func tailedService(limits TailLimits, c *clock) (*Service, *Tails) {
	tails := NewTails(limits)
	tails.now = c.now
	s := NewService(&recorder{}, DefaultLimits, RateLimits{PerTenant: 1e9, PerSource: 1e9}).WithTails(tails)
	s.now = c.now
	return s, tails
}

// recentOf opens a tail of tenant and answers what it starts with.
func recentOf(t *testing.T, s *Service, tails *Tails, tenant string) (*Tail, []*TailOutcome) {
	t.Helper()
	tl, err := tails.Open(tenant)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tails.Close(tl) })
	return tl, s.Recent(context.Background(), tails, tl)
}

func numbered(prefix string, from, n int) []*ingestv1.Event {
	out := make([]*ingestv1.Event, n)
	for i := range out {
		out[i] = ev(fmt.Sprintf("%s%d", prefix, from+i))
	}
	return out
}

// A tail starts with its tenant's last 100 outcomes of the last 10 minutes, oldest first and
// in each request's order (rejections, suppressions, acceptances), with their sender and the
// time they were decided; another tenant's never show; with none recorded, none.
func TestTailStartsWithTheTenantsRecentOutcomes(t *testing.T) {
	c := newClock()
	s, tails := tailedService(DefaultTailLimits, c)
	ctx := context.Background()
	if _, outs := recentOf(t, s, tails, "t1"); len(outs) != 0 {
		t.Fatalf("nothing sent yet, the tail starts with %v", ids(outs))
	}
	if _, err := s.Ingest(ctx, "t1", "k", numbered("old-", 0, 5), 100); err != nil {
		t.Fatal(err)
	}
	c.add(10*time.Minute + time.Second)
	for i := range 3 {
		if _, err := s.Ingest(ctx, "t1", "k", numbered("e-", 50*i, 50), 100); err != nil {
			t.Fatal(err)
		}
		c.add(time.Second)
	}
	bad := &ingestv1.Event{EventId: "bad", Type: ingestv1.EventType_EVENT_TYPE_CLICK}
	if _, err := s.Ingest(ctx, "t1", "k2", append(numbered("last-", 0, 1), bad), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ingest(ctx, "t2", "k", numbered("other-", 0, 3), 100); err != nil {
		t.Fatal(err)
	}
	_, outs := recentOf(t, s, tails, "t1")
	var want []string
	for i := 52; i < 150; i++ {
		want = append(want, fmt.Sprintf("e-%d", i))
	}
	want = append(want, "bad", "last-0")
	if got := strings.Join(ids(outs), " "); got != strings.Join(want, " ") {
		t.Fatalf("the tail starts with\n%s\nwant\n%s", got, strings.Join(want, " "))
	}
	last := outs[len(outs)-2:]
	if last[0].GetOutcome() != ingestv1.EventOutcome_EVENT_OUTCOME_REJECTED || last[0].GetRejection().GetField() != "events[1].user_id" ||
		last[1].GetOutcome() != ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED || last[1].GetEvent().GetName() != "signup" ||
		last[1].GetSource() != "k2" || !last[1].GetTime().AsTime().Equal(c.now()) {
		t.Fatalf("the last request's outcomes: %v", last)
	}
	c.add(10 * time.Minute)
	if _, outs := recentOf(t, s, tails, "t1"); strings.Join(ids(outs), " ") != "bad last-0" {
		t.Fatalf("ten minutes later the tail starts with %v, want only the outcomes of the last ten minutes", ids(outs))
	}
}

// At the time a tail opens, the accepted events of a subject suppressed since are left out of
// its start; events suppressed when they were sent show by id only, as they did live.
func TestTailStartLeavesOutSubjectsSuppressedSince(t *testing.T) {
	c := newClock()
	h := testHasher(t)
	view := privacy.NewView(nil)
	view.Apply(privacy.SuppressionKey("t1", h.SubjectHash("t1", "gone-before")), []byte("dsr_1"), false)
	s, tails := tailedService(DefaultTailLimits, c)
	s.WithPrivacy(Privacy{State: view, Hasher: h})
	ctx := context.Background()
	in := []*ingestv1.Event{subject("kept", "", "a"), subject("gone-later", "", "b"), subject("", "gone-later", "c"), subject("gone-before", "", "d"), subject("kept", "", "e")}
	if res, err := s.Ingest(ctx, "t1", "k", in, 100); err != nil || len(res.Accepted) != 4 || res.Suppressed != 1 {
		t.Fatalf("Ingest = %+v, %v", res, err)
	}
	view.Apply(privacy.SuppressionKey("t1", h.SubjectHash("t1", "gone-later")), []byte("dsr_2"), false)
	_, outs := recentOf(t, s, tails, "t1")
	if got := strings.Join(ids(outs), " "); got != "d a e" {
		t.Fatalf("the tail starts with %s, want d (suppressed then) a e (b and c's subject is suppressed now)", got)
	}
	if d := outs[0]; d.GetOutcome() != ingestv1.EventOutcome_EVENT_OUTCOME_SUPPRESSED || d.GetEvent() != nil || d.GetRejection() != nil {
		t.Fatalf("a suppressed event shows more than its id: %v", d)
	}
}

// A live outcome already sent among the recent ones is not sent again: an outcome decided as
// the tail opens may be both in the history and on its way live.
func TestTailSkipsLiveOutcomesItStartedWith(t *testing.T) {
	c := newClock()
	s, tails := tailedService(DefaultTailLimits, c)
	tl, err := tails.Open("t1")
	if err != nil {
		t.Fatal(err)
	}
	defer tails.Close(tl)
	if _, err := s.Ingest(context.Background(), "t1", "k", numbered("e-", 0, 2), 100); err != nil {
		t.Fatal(err)
	}
	recent := s.Recent(context.Background(), tails, tl)
	if len(recent) != 2 {
		t.Fatalf("recent %v", ids(recent))
	}
	c.add(time.Second)
	if _, err := s.Ingest(context.Background(), "t1", "k", numbered("e-", 2, 1), 100); err != nil {
		t.Fatal(err)
	}
	var live []*TailOutcome
	for range 3 {
		if o := <-tl.Outcomes(); !tl.Repeats(o) {
			live = append(live, o)
		}
	}
	if got := strings.Join(ids(live), " "); got != "e-2" {
		t.Fatalf("live after the start: %s, want e-2 only", got)
	}
}

// The history is bounded: a request keeps at most the last History outcomes (copied, so the
// rest of the request is not held), a tenant its last History, and an instance at most
// HistoryBytes across tenants (request wire sizes plus bookkeeping): over it, the tenants that
// sent least recently lose theirs first. Tenants idle for longer than HistoryAge are dropped.
func TestTailHistoryIsBounded(t *testing.T) {
	c := newClock()
	limits := DefaultTailLimits
	limits.HistoryBytes = 10 * (10_000 + requestOverhead + tenantOverhead)
	s, tails := tailedService(limits, c)
	ctx := context.Background()
	res, err := s.Ingest(ctx, "big", "k", numbered("e-", 0, 1000), 10_000)
	if err != nil {
		t.Fatal(err)
	}
	th := tails.history.byName["big"].Value.(*tenantHistory)
	if r := th.requests[0]; len(r.accepted) != 100 || &r.accepted[0] == &res.Accepted[900] || r.accepted[0].GetEvent().GetEventId() != "e-900" {
		t.Fatalf("a 1,000-event request keeps %d outcomes, want a copy of its last 100", len(r.accepted))
	}
	for i := range 200 {
		if _, err := s.Ingest(ctx, "big", "k", numbered(fmt.Sprintf("r%d-", i), 0, 1), 10); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(th.requests); n != 100 || th.outcomes != 100 {
		t.Fatalf("tenant keeps %d requests, %d outcomes; want 100", n, th.outcomes)
	}
	for i := range 20 {
		c.add(time.Millisecond)
		if _, err := s.Ingest(ctx, fmt.Sprintf("t%d", i), "k", numbered("e-", 0, 1), 10_000); err != nil {
			t.Fatal(err)
		}
		if tails.history.bytes > limits.HistoryBytes {
			t.Fatalf("history holds %d bytes, over its %d", tails.history.bytes, limits.HistoryBytes)
		}
	}
	for _, gone := range []string{"big", "t0", "t9"} {
		if tails.history.byName[gone] != nil {
			t.Errorf("tenant %s kept after more recent tenants filled the budget", gone)
		}
	}
	for _, kept := range []string{"t10", "t19"} {
		if tails.history.byName[kept] == nil {
			t.Errorf("recent tenant %s lost its history", kept)
		}
	}
	c.add(limits.HistoryAge + time.Second)
	if _, err := s.Ingest(ctx, "fresh", "k", numbered("e-", 0, 1), 10); err != nil {
		t.Fatal(err)
	}
	if n := len(tails.history.byName); n != 1 {
		t.Fatalf("%d tenants kept after they were idle for longer than HistoryAge, want only the one that just sent", n)
	}
}

// With History 0 nothing is kept and a tail starts with the live outcomes.
func TestTailHistoryOff(t *testing.T) {
	c := newClock()
	limits := DefaultTailLimits
	limits.History = 0
	s, tails := tailedService(limits, c)
	if _, err := s.Ingest(context.Background(), "t1", "k", numbered("e-", 0, 3), 100); err != nil {
		t.Fatal(err)
	}
	if _, outs := recentOf(t, s, tails, "t1"); len(outs) != 0 || len(tails.history.byName) != 0 {
		t.Fatalf("history off, the tail starts with %v", ids(outs))
	}
}
