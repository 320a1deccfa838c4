package campaigns_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit/auditpb"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
)

func decodeAudit(t *testing.T, data []byte) audit.Record {
	t.Helper()
	var p authv1.AuditRecord
	if err := proto.Unmarshal(data, &p); err != nil {
		t.Fatal(err)
	}
	return auditpb.FromProto(&p)
}

func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// tick sets the clock and runs one scheduler tick.
func (e *env) tick(t *testing.T, s *campaigns.Scheduler, when string) {
	t.Helper()
	e.clock.Set(at(t, when))
	if _, err := s.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (e *env) wantState(t *testing.T, when string, c campaigns.Campaign, want campaigns.State) {
	t.Helper()
	if got := e.get(t, c.TenantID, c.ID).State; got != want {
		t.Errorf("at %s campaign %q is %s, want %s", when, c.Name, got, want)
	}
}

// The schedule is wall-clock time in the campaign's zone, across both daylight-saving changes
// of 2026 in New York: the scheduler acts at exactly the resolved instants, not an hour off.
func TestSchedulerFollowsTheZoneAcrossDaylightSaving(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.clock.Set(at(t, "2026-03-07T12:00:00Z"))
	nine := e.create(t, "t1", draft(t)) // 09:00 on 2026-03-08 (EDT) to 01:30 on 2026-11-01 (EDT, the first one)
	gap := draft(t)
	gap.Name = "Gap"
	gap.Schedule.Start, gap.Schedule.End = wall(t, "2026-03-08T02:30"), wall(t, "2026-03-08T12:00") // 02:30 does not exist: 03:30 EDT
	inGap := e.create(t, "t1", gap)
	e.act(t, "t1", nine.ID, campaigns.ActSchedule)
	e.act(t, "t1", inGap.ID, campaigns.ActSchedule)
	s := e.scheduler(t)

	steps := []struct {
		at   string
		c    campaigns.Campaign
		want campaigns.State
	}{
		{"2026-03-08T07:29:59Z", inGap, campaigns.Scheduled},
		{"2026-03-08T07:30:00Z", inGap, campaigns.Active}, // 03:30 EDT
		{"2026-03-08T12:59:59Z", nine, campaigns.Scheduled},
		{"2026-03-08T13:00:00Z", nine, campaigns.Active}, // 09:00 EDT, not 14:00Z (09:00 EST)
		{"2026-03-08T15:59:59Z", inGap, campaigns.Active},
		{"2026-03-08T16:00:00Z", inGap, campaigns.Completed}, // 12:00 EDT
		{"2026-11-01T05:29:59Z", nine, campaigns.Active},
		{"2026-11-01T05:30:00Z", nine, campaigns.Completed}, // 01:30 EDT, not 06:30Z (01:30 EST)
	}
	for _, st := range steps {
		e.tick(t, s, st.at)
		e.wantState(t, st.at, st.c, st.want)
	}
	for _, x := range []struct {
		c    campaigns.Campaign
		want []string
	}{
		{nine, []string{"ScheduleCampaign@2026-03-07T12:00:00Z", "scheduler:start@2026-03-08T13:00:00Z", "scheduler:end@2026-11-01T05:30:00Z"}},
		{inGap, []string{"ScheduleCampaign@2026-03-07T12:00:00Z", "scheduler:start@2026-03-08T07:30:00Z", "scheduler:end@2026-03-08T16:00:00Z"}},
	} {
		c, want := x.c, x.want
		var got []string
		for _, tr := range e.transitions(t, "t1", c.ID) {
			got = append(got, tr.Trigger+"@"+tr.EffectiveTime.UTC().Format(time.RFC3339))
		}
		if !slices.Equal(got, want) {
			t.Errorf("transitions of %q = %v, want %v", c.Name, got, want)
		}
	}
	audit := e.auditIDs(t)
	if len(audit["campaigns.scheduler/start"]) != 2 || len(audit["campaigns.scheduler/end"]) != 2 {
		t.Errorf("audit records of the scheduler: %v", audit)
	}
}

// A daily budget is a local day's: spent, the campaign waits for the next midnight in its
// zone — 05:00Z before the spring-forward change, 04:00Z after it.
func TestDailyBudgetResumesAtLocalMidnight(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.clock.Set(at(t, "2026-03-07T12:00:00Z"))
	d := draft(t)
	d.Schedule.Start = wall(t, "2026-03-07T08:00") // 13:00Z
	c := e.create(t, "t1", d)
	e.act(t, "t1", c.ID, campaigns.ActSchedule)
	s := e.scheduler(t)
	e.tick(t, s, "2026-03-07T13:00:00Z")
	e.wantState(t, "start", c, campaigns.Active)

	e.spend.add("t1", c.ID, at(t, "2026-03-07T15:00:00Z"), 1_000_000_000, "EUR") // another currency: not against a USD budget
	e.spend.add("t1", c.ID, at(t, "2026-03-07T20:00:00Z"), 10_000_000, "USD")    // the whole daily budget
	e.spend.add("t2", c.ID, at(t, "2026-03-07T20:00:00Z"), 90_000_000, "USD")    // another tenant's rows never count
	e.clock.Set(at(t, "2026-03-07T21:00:00Z"))
	if n, err := s.CheckBudgets(ctx, e.clock.Now()); err != nil || n != 1 {
		t.Fatalf("budget check made %d transitions (%v), want 1", n, err)
	}
	got := e.get(t, "t1", c.ID)
	if got.State != campaigns.BudgetExhausted || got.Exhausted != campaigns.ExhaustedDaily || got.ResumeTime == nil || !got.ResumeTime.Equal(at(t, "2026-03-08T05:00:00Z")) {
		t.Fatalf("after spending the daily budget: %s %s resume %v; want daily, resuming at New York midnight 05:00Z", got.State, got.Exhausted, got.ResumeTime)
	}
	if n, _ := s.CheckBudgets(ctx, e.clock.Now()); n != 0 {
		t.Fatalf("a second check made %d more transitions", n)
	}
	e.tick(t, s, "2026-03-08T04:59:59Z")
	e.wantState(t, "before midnight", c, campaigns.BudgetExhausted)
	e.tick(t, s, "2026-03-08T05:00:00Z")
	e.wantState(t, "midnight", c, campaigns.Active)

	// Pacing at 12:00 EDT on the 23-hour day: 11 of 23 hours gone.
	e.clock.Set(at(t, "2026-03-08T16:00:00Z"))
	p, err := e.svc.Pacing(ctx, manager("t1"), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if p.SpendToday != 0 || p.TotalSpend != 10_000_000 || p.DailyAllowance != 10_000_000 || p.Allowed != 10_000_000*11/23 || !p.OnPace || p.Currency != "USD" {
		t.Errorf("pacing %+v", p)
	}

	e.spend.add("t1", c.ID, at(t, "2026-03-08T20:00:00Z"), 10_000_000, "USD")
	e.clock.Set(at(t, "2026-03-08T21:00:00Z"))
	if _, err := s.CheckBudgets(ctx, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if got := e.get(t, "t1", c.ID); got.ResumeTime == nil || !got.ResumeTime.Equal(at(t, "2026-03-09T04:00:00Z")) {
		t.Fatalf("resume after the spring-forward day: %v, want 04:00Z (EDT midnight)", got.ResumeTime)
	}
	e.tick(t, s, "2026-03-09T03:59:59Z")
	e.wantState(t, "before the EDT midnight", c, campaigns.BudgetExhausted)
	e.tick(t, s, "2026-03-09T04:00:00Z")
	e.wantState(t, "EDT midnight", c, campaigns.Active)

	// The total budget is not reset at midnight: only raising it resumes the campaign.
	e.spend.add("t1", c.ID, at(t, "2026-03-09T05:00:00Z"), 80_000_000, "USD")
	e.clock.Set(at(t, "2026-03-09T06:00:00Z"))
	if _, err := s.CheckBudgets(ctx, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	got = e.get(t, "t1", c.ID)
	if got.State != campaigns.BudgetExhausted || got.Exhausted != campaigns.ExhaustedTotal || got.ResumeTime != nil {
		t.Fatalf("after spending the total: %+v", got)
	}
	e.tick(t, s, "2026-03-11T06:00:00Z")
	e.wantState(t, "days later", c, campaigns.BudgetExhausted)
	in := got
	in.Budget.TotalMicros = 200_000_000
	if _, err := e.svc.UpdateCampaign(ctx, manager("t1"), in, []string{"budget.total_micros"}, ""); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CheckBudgets(ctx, e.clock.Now()); err != nil || n != 1 {
		t.Fatalf("check after raising the budget: %d, %v", n, err)
	}
	e.wantState(t, "after raising the total", c, campaigns.Active)

	var triggers []string
	for _, tr := range e.transitions(t, "t1", c.ID) {
		triggers = append(triggers, tr.Trigger)
	}
	want := []string{"ScheduleCampaign", "scheduler:start", "scheduler:budget_exhausted", "scheduler:daily_reset",
		"scheduler:budget_exhausted", "scheduler:daily_reset", "scheduler:budget_exhausted", "scheduler:budget_available"}
	if !slices.Equal(triggers, want) {
		t.Errorf("transitions %v, want %v", triggers, want)
	}
}

// A scheduler that was down finds everything that fell due meanwhile, and dates each
// transition when it was due.
func TestSchedulerCatchesUpAfterDowntime(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	whole := draft(t)
	whole.Name = "Whole"
	whole.Schedule.Start, whole.Schedule.End, whole.Schedule.TimeZone = wall(t, "2026-03-02T09:00"), wall(t, "2026-03-04T17:00"), "Europe/Berlin"
	w := e.create(t, "t1", whole)
	open := draft(t)
	open.Name = "Open"
	open.Schedule.Start, open.Schedule.End = wall(t, "2026-03-03T00:00"), campaigns.WallClock{}
	o := e.create(t, "t1", open)
	e.act(t, "t1", w.ID, campaigns.ActSchedule)
	e.act(t, "t1", o.ID, campaigns.ActSchedule)

	s := e.scheduler(t)
	e.tick(t, s, "2026-03-10T00:00:00Z") // the first tick in nine days
	e.wantState(t, "after downtime", w, campaigns.Completed)
	e.wantState(t, "after downtime", o, campaigns.Active)
	ts := e.transitions(t, "t1", w.ID)
	if len(ts) != 3 || ts[1].Trigger != "scheduler:start" || !ts[1].EffectiveTime.Equal(at(t, "2026-03-02T08:00:00Z")) ||
		ts[2].Trigger != "scheduler:end" || !ts[2].EffectiveTime.Equal(at(t, "2026-03-04T16:00:00Z")) {
		t.Fatalf("transitions %+v", ts)
	}
	if got := e.get(t, "t1", w.ID); !got.StateTime.Equal(at(t, "2026-03-04T16:00:00Z")) {
		t.Errorf("state time %v, want the end of the schedule", got.StateTime)
	}
	if n, err := s.Tick(context.Background()); err != nil || n != 0 {
		t.Fatalf("a second tick made %d transitions (%v)", n, err)
	}
}

// Two schedulers (two replicas, each with its own connection pool) run against the same
// database at once, in small batches: every transition still happens exactly once, and is
// audited exactly once.
func TestTwoSchedulersMakeEachTransitionOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	const n = 120
	var ids []string
	overspent := map[string]bool{}
	for i := range n {
		d := draft(t)
		d.Name = fmt.Sprint("c", i)
		d.Schedule.Start = wall(t, "2026-03-02T00:00")
		if i%2 == 0 {
			d.Schedule.End = wall(t, "2026-03-03T00:00") // starts and ends while nobody looked
		} else {
			d.Schedule.End = wall(t, "2026-12-01T00:00")
		}
		c := e.create(t, fmt.Sprint("t", i%3), d)
		e.act(t, c.TenantID, c.ID, campaigns.ActSchedule)
		if i%4 == 1 {
			e.spend.add(c.TenantID, c.ID, at(t, "2026-03-05T06:00:00Z"), c.Budget.DailyMicros, "USD") // 01:00 EST today
			overspent[c.ID] = true
		}
		ids = append(ids, c.ID)
	}
	e.clock.Set(at(t, "2026-03-05T12:00:00Z"))
	schedulers := []*campaigns.Scheduler{e.scheduler(t, campaigns.WithBatchSize(7)), e.scheduler(t, campaigns.WithBatchSize(7))}
	race := func(f func(s *campaigns.Scheduler) (int, error)) int {
		var wg sync.WaitGroup
		var mu sync.Mutex
		total := 0
		for _, s := range schedulers {
			wg.Go(func() {
				for range 3 {
					made, err := f(s)
					if err != nil {
						t.Error(err)
					}
					mu.Lock()
					total += made
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return total
	}
	due := race(func(s *campaigns.Scheduler) (int, error) { return s.RunDue(ctx, e.clock.Now()) })
	budget := race(func(s *campaigns.Scheduler) (int, error) { return s.CheckBudgets(ctx, e.clock.Now()) })
	if want := n + n/2; due != want {
		t.Errorf("the schedulers report %d due transitions, want %d", due, want)
	}
	if budget != len(overspent) {
		t.Errorf("the schedulers report %d budget transitions, want %d", budget, len(overspent))
	}

	audit := e.auditIDs(t)
	audited := map[string]int{}
	for _, method := range []string{"campaigns.scheduler/start", "campaigns.scheduler/end", "campaigns.scheduler/budget_exhausted"} {
		for _, id := range audit[method] {
			audited[id]++
		}
	}
	for i, id := range ids {
		c := e.get(t, fmt.Sprint("t", i%3), id)
		count := map[string]int{}
		for _, tr := range e.transitions(t, c.TenantID, id) {
			count[tr.Trigger]++
			if tr.Actor == campaigns.SchedulerActor && audited[tr.ID] != 1 {
				t.Errorf("transition %s (%s) has %d audit records, want 1", tr.ID, tr.Trigger, audited[tr.ID])
			}
		}
		want := map[string]int{"ScheduleCampaign": 1, "scheduler:start": 1}
		wantState := campaigns.Active
		switch {
		case i%2 == 0:
			want["scheduler:end"], wantState = 1, campaigns.Completed
		case overspent[id]:
			want["scheduler:budget_exhausted"], wantState = 1, campaigns.BudgetExhausted
		}
		if fmt.Sprint(count) != fmt.Sprint(want) || c.State != wantState {
			t.Errorf("campaign %d: %s with transitions %v, want %s with %v", i, c.State, count, wantState, want)
		}
	}
	if len(audited) != due+budget {
		t.Errorf("%d scheduler audit records for %d transitions", len(audited), due+budget)
	}
}

func TestSpendSourceOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	c := e.inState(t, "t1", campaigns.Active)
	e.spend.add("t1", c.ID, e.clock.Now(), c.Budget.TotalMicros, "USD")
	e.spend.mu.Lock()
	e.spend.fail = errors.New("analytics: connection refused")
	e.spend.mu.Unlock()
	s := e.scheduler(t)
	if n, err := s.CheckBudgets(ctx, e.clock.Now()); err != nil || n != 0 {
		t.Fatalf("check with the spend source down: %d, %v; want nothing done and no error (retried later)", n, err)
	}
	e.wantState(t, "spend source down", c, campaigns.Active)
	if _, err := e.svc.Pacing(ctx, manager("t1"), c.ID); code(err) != apperr.Unavailable || errors.Is(err, e.spend.fail) {
		t.Fatalf("pacing with the spend source down: %v; want UNAVAILABLE without the cause", err)
	}
	e.spend.mu.Lock()
	e.spend.fail = nil
	e.spend.mu.Unlock()
	if n, err := s.CheckBudgets(ctx, e.clock.Now()); err != nil || n != 1 {
		t.Fatalf("check after recovery: %d, %v", n, err)
	}
	if _, err := campaigns.NewService(e.store, nil).Pacing(ctx, manager("t1"), c.ID); code(err) != apperr.Unavailable {
		t.Fatalf("pacing without a spend source: %v", err)
	}
}

// hangingSpend never answers until its caller gives up: analytics hanging. called closes at
// the first call.
type hangingSpend struct {
	once   sync.Once
	called chan struct{}
}

func (h *hangingSpend) Spend(ctx context.Context, _ string, _ []string, _, _ time.Time) ([]campaigns.Spend, error) {
	h.once.Do(func() { close(h.called) })
	<-ctx.Done()
	return nil, ctx.Err()
}

// Starts and ends do not wait for spend lookups: Run keeps them apart.
func TestRunMakesDueTransitionsWhileSpendHangs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	active := e.inState(t, "t1", campaigns.Active) // a budget to check: the check hangs
	c := e.inState(t, "t1", campaigns.Scheduled)
	hang := &hangingSpend{called: make(chan struct{})}
	s := campaigns.NewScheduler(e.openStore(t), hang, e.outbox, slog.New(slog.DiscardHandler),
		campaigns.WithSchedulerClock(e.clock.Now), campaigns.WithInterval(10*time.Millisecond), campaigns.WithBudgetInterval(10*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-hang.called                              // a budget check hangs now
	e.clock.Set(at(t, "2026-03-09T00:00:00Z")) // and then the start comes
	meshtest.Eventually(t, 10*time.Second, func() bool { return e.get(t, "t1", c.ID).State == campaigns.Active },
		"the scheduled campaign was not started while the spend source hung")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e.wantState(t, "after the run", active, campaigns.Active)
}
