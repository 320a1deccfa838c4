package campaigns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
)

// SchedulerActor is the actor of the scheduler's transitions and audit records.
const SchedulerActor = "service:campaigns"

// schedulerMethod is the audit "method" of a scheduler action, e.g.
// "campaigns.scheduler/start": the scheduler is no RPC, but its records sit in the same
// audit log as the RPCs'.
func schedulerMethod(a Action) string { return "campaigns.scheduler/" + string(a) }

// Scheduler makes the automatic transitions: it activates scheduled campaigns at their start,
// completes running ones at their end, stops campaigns whose budget is spent and resumes them
// at the next local midnight (daily budget) or when their budget is raised.
//
// It is durable and safe to run in several replicas at once: all its state is in the
// database; due campaigns are claimed with SELECT … FOR UPDATE SKIP LOCKED and re-checked
// under the lock, so each transition is made exactly once; and work that fell due while no
// scheduler ran (downtime) is simply due at the next tick, with the transition dated when it
// was due. Every transition is audited through the service's audit outbox, in the transaction
// that makes it.
type Scheduler struct {
	store          Store
	spend          SpendSource
	outbox         audit.Waker
	logger         *slog.Logger
	metrics        Metrics
	now            func() time.Time
	interval       time.Duration
	budgetInterval time.Duration
	batch          int
	lastBudget     time.Time
}

// SchedulerOption configures a Scheduler.
type SchedulerOption func(*Scheduler)

// WithSchedulerClock replaces the scheduler's clock (tests).
func WithSchedulerClock(now func() time.Time) SchedulerOption {
	return func(s *Scheduler) { s.now = now }
}

// WithInterval sets how often Run looks for due campaigns (default 1 s).
func WithInterval(d time.Duration) SchedulerOption { return func(s *Scheduler) { s.interval = d } }

// WithBudgetInterval sets how often Run compares spend with budgets (default 10 s).
func WithBudgetInterval(d time.Duration) SchedulerOption {
	return func(s *Scheduler) { s.budgetInterval = d }
}

// WithMetrics sets where the scheduler reports its transitions, their lateness, the campaigns
// left due and its budget checks (default: nowhere).
func WithMetrics(m Metrics) SchedulerOption { return func(s *Scheduler) { s.metrics = m } }

// WithBatchSize sets how many campaigns one transaction claims (default 200).
func WithBatchSize(n int) SchedulerOption { return func(s *Scheduler) { s.batch = n } }

// Defaults of the scheduler.
const (
	DefaultSchedulerInterval = time.Second
	DefaultBudgetInterval    = 10 * time.Second
	defaultBatch             = 200
)

// NewScheduler returns a scheduler. spend may be nil (budgets are then not enforced). The store
// writes the audit records of its transitions into the audit outbox, whose table must exist;
// outbox, told when there are new ones, may be nil (tests).
func NewScheduler(store Store, spend SpendSource, outbox audit.Waker, logger *slog.Logger, opts ...SchedulerOption) *Scheduler {
	s := &Scheduler{store: store, spend: spend, outbox: outbox, logger: logger, metrics: NopMetrics{}, now: time.Now,
		interval: DefaultSchedulerInterval, budgetInterval: DefaultBudgetInterval, batch: defaultBatch}
	for _, o := range opts {
		o(s)
	}
	s.batch = min(max(s.batch, 1), MaxSpendBatch)
	return s
}

// Run makes due transitions every interval and compares spend with budgets every budget
// interval, until ctx ends. The two run apart, so a slow or unreachable analytics service
// never delays a start or an end. Failures are logged and retried at the next round.
func (s *Scheduler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() {
		s.every(ctx, s.interval, "run due transitions", func(ctx context.Context) error {
			_, err := s.RunDue(ctx, s.now())
			return err
		})
	})
	if s.spend == nil {
		s.logger.Warn("no spend source: budgets are not enforced")
	} else {
		wg.Go(func() {
			s.every(ctx, s.budgetInterval, "check budgets", func(ctx context.Context) error {
				_, err := s.CheckBudgets(ctx, s.now())
				return err
			})
		})
	}
	wg.Wait()
	return nil
}

func (s *Scheduler) every(ctx context.Context, d time.Duration, what string, f func(context.Context) error) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		if err := f(ctx); err != nil && ctx.Err() == nil {
			s.logger.ErrorContext(ctx, what, "err", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick makes every transition due now, and compares spend with budgets when the budget
// interval has passed since its last comparison: one round of Run, in one goroutine (tests
// drive the scheduler with it). It returns how many transitions it made.
func (s *Scheduler) Tick(ctx context.Context) (int, error) {
	now := s.now()
	n, err := s.RunDue(ctx, now)
	if err != nil {
		return n, err
	}
	if s.spend != nil && now.Sub(s.lastBudget) >= s.budgetInterval {
		s.lastBudget = now
		m, err := s.CheckBudgets(ctx, now)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// due says, for each kind of due work in the order it is done, which action it takes and
// when it was due. Starts come before ends so that a campaign whose whole schedule passed
// during downtime is first activated, then completed.
var due = []struct {
	kind   DueKind
	action Action
	when   func(c Campaign) time.Time
}{
	{DueStart, ActStart, func(c Campaign) time.Time { return *c.Schedule.StartTime }},
	{DueEnd, ActEnd, func(c Campaign) time.Time { return *c.Schedule.EndTime }},
	{DueResume, ActDailyReset, func(c Campaign) time.Time { return *c.ResumeTime }},
}

// RunDue makes every time-triggered transition due at now and returns how many it made. Then,
// whether or not that succeeded, it reports how many campaigns are still due.
func (s *Scheduler) RunDue(ctx context.Context, now time.Time) (int, error) {
	total, err := s.runDue(ctx, now)
	n, cerr := s.store.CountDue(ctx, now)
	switch {
	case cerr == nil:
		s.metrics.Due(n)
	case err == nil:
		err = fmt.Errorf("count due campaigns: %w", cerr)
	}
	return total, err
}

func (s *Scheduler) runDue(ctx context.Context, now time.Time) (int, error) {
	total := 0
	for _, d := range due {
		for {
			work := auditAs(ctx, func() Action { return d.action })
			applied, err := s.store.ApplyDue(ctx, d.kind, now, s.batch, func(c *Campaign) (*Transition, *audit.Record, error) {
				to, err := Next(c.State, d.action)
				if err != nil {
					return nil, nil, ErrUnchanged // the store's query and the state machine disagree: leave it
				}
				return c.enter(to, "scheduler:"+string(d.action), SchedulerActor, d.when(*c)), takeRecord(work, c.TenantID, c.ID), nil
			})
			if err != nil {
				return total, fmt.Errorf("run due %s: %w", d.kind, err)
			}
			for _, a := range applied {
				s.metrics.Late(max(now.Sub(a.Transition.EffectiveTime), 0))
			}
			s.applied(ctx, d.action, applied)
			total += len(applied)
			if len(applied) < s.batch {
				break
			}
		}
	}
	return total, nil
}

// auditAs returns ctx in which each transition the scheduler decides is audited as its
// action (read when the record is taken, once the change has decided it for budget checks).
func auditAs(ctx context.Context, action func() Action) context.Context {
	return audit.WithWork(ctx, func() audit.Record {
		return audit.Record{Method: schedulerMethod(action()), Actor: SchedulerActor, ActorKind: "service",
			Outcome: codes.OK, Service: "campaigns"}
	})
}

// applied logs and counts transitions made (and audited) by action, and tells the outbox to
// deliver their records.
func (s *Scheduler) applied(ctx context.Context, action Action, applied []Applied) {
	for _, a := range applied {
		s.metrics.Transitioned(string(action), string(a.Transition.From), string(a.Transition.To))
		s.logger.InfoContext(ctx, "campaign transition", "campaign_id", a.Campaign.ID, "tenant_id", a.Campaign.TenantID,
			"from", string(a.Transition.From), "to", string(a.Transition.To), "trigger", a.Transition.Trigger)
	}
	if len(applied) > 0 && s.outbox != nil {
		s.outbox.Wake()
	}
}

// CheckBudgets compares the spend of every active or budget-exhausted campaign with its
// budgets at now: campaigns over a budget become budget-exhausted, exhausted ones with room
// again become active. Spend lookups that fail are logged and retried at the next check.
func (s *Scheduler) CheckBudgets(ctx context.Context, now time.Time) (int, error) {
	if s.spend == nil {
		return 0, nil
	}
	made, after := 0, ""
	for {
		cs, err := s.store.BudgetCandidates(ctx, after, s.batch)
		if err != nil {
			return made, fmt.Errorf("check budgets: %w", err)
		}
		byTenant := map[string][]Campaign{}
		for _, c := range cs {
			byTenant[c.TenantID] = append(byTenant[c.TenantID], c)
		}
		for _, tenant := range slices.Sorted(maps.Keys(byTenant)) {
			n, err := s.checkTenant(ctx, tenant, byTenant[tenant], now)
			made += n
			if err != nil {
				if ctx.Err() != nil {
					return made, ctx.Err()
				}
				s.logger.WarnContext(ctx, "check budgets; will retry", "tenant_id", tenant, "err", err.Error())
			}
		}
		if len(cs) < s.batch {
			return made, nil
		}
		after = cs[len(cs)-1].ID
	}
}

func (s *Scheduler) checkTenant(ctx context.Context, tenant string, cs []Campaign, now time.Time) (int, error) {
	end := windowEnd(now)
	ids := make([]string, len(cs))
	from := now
	byDay := map[time.Time][]string{}
	for i, c := range cs {
		ids[i] = c.ID
		if since, _ := totalWindow(c, now); since.Before(from) {
			from = since
		}
		dayStart, _ := dayWindow(c, now)
		byDay[dayStart] = append(byDay[dayStart], c.ID)
	}
	unavailable := func() {
		for range cs {
			s.metrics.BudgetChecked(CheckSpendUnavailable)
		}
	}
	totals, err := s.spend.Spend(ctx, tenant, ids, from, end)
	if err != nil {
		unavailable()
		return 0, fmt.Errorf("read total spend: %w", err)
	}
	var today []Spend
	for dayStart, dayIDs := range byDay {
		rows, err := s.spend.Spend(ctx, tenant, dayIDs, dayStart, end)
		if err != nil {
			unavailable()
			return 0, fmt.Errorf("read today's spend: %w", err)
		}
		today = append(today, rows...)
	}
	made := 0
	for _, c := range cs {
		var action Action
		work := auditAs(ctx, func() Action { return action })
		change := func(cur *Campaign) (*Transition, *audit.Record, error) {
			total, day := spendIn(totals, cur.ID, cur.Budget.Currency), spendIn(today, cur.ID, cur.Budget.Currency)
			v := judgeBudget(*cur, now, total, day)
			switch {
			case cur.State == Active && v.exhausted != "":
				action = ActExhaust
				t := cur.enter(BudgetExhausted, "scheduler:"+string(ActExhaust), SchedulerActor, now)
				cur.Exhausted, cur.ResumeTime = v.exhausted, v.resume
				return t, takeRecord(work, tenant, cur.ID), nil
			case cur.State == BudgetExhausted && v.exhausted == "":
				// The budget was raised, or a new day began before the daily reset ran.
				action = ActReplenish
				return cur.enter(Active, "scheduler:"+string(ActReplenish), SchedulerActor, now), takeRecord(work, tenant, cur.ID), nil
			}
			// Otherwise nothing changes. (A total exhaustion whose total was raised while today's
			// budget is spent stays "total" until the next day's check resumes it.)
			return nil, nil, ErrUnchanged
		}
		if _, ok := quickJudge(c, totals, today, now); !ok {
			s.metrics.BudgetChecked(CheckUnchanged)
			continue // no change by the figures: don't lock the row
		}
		updated, t, err := s.store.UpdateCampaign(ctx, tenant, c.ID, change)
		switch {
		case errors.Is(err, ErrUnchanged), apperr.HasCode(err, apperr.NotFound):
			s.metrics.BudgetChecked(CheckUnchanged)
			continue // changed or deleted meanwhile, or another replica got there first
		case err != nil:
			s.metrics.BudgetChecked(CheckFailed)
			return made, fmt.Errorf("apply budget verdict to campaign %s: %w", c.ID, err)
		}
		made++
		if action == ActExhaust {
			s.metrics.BudgetChecked(CheckExhausted)
			s.metrics.BudgetExhausted(string(updated.Exhausted))
		} else {
			s.metrics.BudgetChecked(CheckReplenished)
		}
		s.applied(ctx, action, []Applied{{Campaign: updated, Transition: *t}})
	}
	return made, nil
}

// quickJudge tells from the unlocked read whether the budget verdict would change c.
func quickJudge(c Campaign, totals, today []Spend, now time.Time) (budgetVerdict, bool) {
	v := judgeBudget(c, now, spendIn(totals, c.ID, c.Budget.Currency), spendIn(today, c.ID, c.Budget.Currency))
	return v, (c.State == Active && v.exhausted != "") || (c.State == BudgetExhausted && v.exhausted == "")
}
