package campaigns_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaignmesh/campaignmesh/services/campaigns"
	campaignsprom "github.com/campaignmesh/campaignmesh/services/campaigns/prometheus"
)

// series reads one series of reg: a counter's or gauge's value, a histogram's count and sum.
// A series that does not exist fails the test.
func series(t *testing.T, reg *prometheus.Registry, name string, labels ...string) (value, sum float64) {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(want) {
				continue
			}
			for _, l := range m.GetLabel() {
				if want[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), 0
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), 0
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount()), m.GetHistogram().GetSampleSum()
			}
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0, 0
}

// The scheduler's work shows in the service's series, over the real store: transitions by
// action and states, how late each due transition was made, the campaigns left due while
// another replica holds them, and budget checks by result with the exhaustions.
func TestSchedulerMetricsMove(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	s := e.scheduler(t, campaigns.WithMetrics(campaignsprom.New(reg)))
	ctx := context.Background()
	counter := func(name string, labels ...string) float64 {
		t.Helper()
		v, _ := series(t, reg, name, labels...)
		return v
	}
	// Every series exists at zero before anything happened.
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"campaigns_scheduler_transitions_total", []string{"action", "start", "from", "scheduled", "to", "active"}},
		{"campaigns_scheduler_transitions_total", []string{"action", "budget_exhausted", "from", "active", "to", "budget_exhausted"}},
		{"campaigns_scheduler_lateness_seconds", nil},
		{"campaigns_scheduler_due_campaigns", nil},
		{"campaigns_budget_checks_total", []string{"result", "unchanged"}},
		{"campaigns_budget_exhaustions_total", []string{"budget", "total"}},
	} {
		if v := counter(c.name, c.labels...); v != 0 {
			t.Errorf("%s%v = %v at start, want 0", c.name, c.labels, v)
		}
	}

	// Both start at 13:00Z on 2026-03-08; the scheduler looks 90 s later, while another
	// replica holds one of them.
	first := e.inState(t, "t1", campaigns.Scheduled)
	held := e.inState(t, "t1", campaigns.Scheduled)
	tx, err := e.openStore(t).Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT 1 FROM campaigns WHERE id = $1::uuid FOR UPDATE`, held.ID); err != nil {
		t.Fatal(err)
	}
	now := at(t, "2026-03-08T13:01:30Z")
	if n, err := s.RunDue(ctx, now); err != nil || n != 1 {
		t.Fatalf("run due while one is held: %d, %v", n, err)
	}
	if v := counter("campaigns_scheduler_transitions_total", "action", "start", "from", "scheduled", "to", "active"); v != 1 {
		t.Errorf("start transitions %v, want 1", v)
	}
	if n, sum := series(t, reg, "campaigns_scheduler_lateness_seconds"); n != 1 || sum != 90 {
		t.Errorf("lateness: %v observations summing %v s, want 1 of 90 s", n, sum)
	}
	if v := counter("campaigns_scheduler_due_campaigns"); v != 1 {
		t.Errorf("due campaigns %v while one is held, want 1", v)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	now = now.Add(30 * time.Second)
	if n, err := s.RunDue(ctx, now); err != nil || n != 1 {
		t.Fatalf("run due once released: %d, %v", n, err)
	}
	if n, sum := series(t, reg, "campaigns_scheduler_lateness_seconds"); n != 2 || sum != 90+120 {
		t.Errorf("lateness: %v observations summing %v s, want 2 summing 210 s", n, sum)
	}
	if v := counter("campaigns_scheduler_due_campaigns"); v != 0 {
		t.Errorf("due campaigns %v once all ran, want 0", v)
	}

	// One campaign spends its whole budget: one exhaustion, one unchanged.
	e.spend.add("t1", first.ID, now, first.Budget.TotalMicros, first.Budget.Currency)
	if n, err := s.CheckBudgets(ctx, now); err != nil || n != 1 {
		t.Fatalf("check budgets: %d, %v", n, err)
	}
	for _, c := range []struct {
		labels []string
		want   float64
	}{{[]string{"result", "exhausted"}, 1}, {[]string{"result", "unchanged"}, 1}, {[]string{"result", "spend_unavailable"}, 0}} {
		if v := counter("campaigns_budget_checks_total", c.labels...); v != c.want {
			t.Errorf("budget checks %v = %v, want %v", c.labels, v, c.want)
		}
	}
	if v := counter("campaigns_budget_exhaustions_total", "budget", "total"); v != 1 {
		t.Errorf("total budget exhaustions %v, want 1", v)
	}
	if v := counter("campaigns_scheduler_transitions_total", "action", "budget_exhausted", "from", "active", "to", "budget_exhausted"); v != 1 {
		t.Errorf("exhaust transitions %v, want 1", v)
	}

	// While the spend cannot be read, both campaigns' checks are counted as such.
	e.spend.mu.Lock()
	e.spend.fail = errors.New("analytics away")
	e.spend.mu.Unlock()
	if _, err := s.CheckBudgets(ctx, now); err != nil {
		t.Fatal(err)
	}
	if v := counter("campaigns_budget_checks_total", "result", "spend_unavailable"); v != 2 {
		t.Errorf("unavailable checks %v, want 2", v)
	}
}
