package campaigns

import "time"

// Metrics receives what the scheduler does, for the service's monitoring. The domain knows no
// metrics library: services/campaigns/prometheus implements this port on the service's
// registry; NopMetrics discards everything.
type Metrics interface {
	// Transitioned counts one transition the scheduler made, by its action and states.
	Transitioned(action, from, to string)
	// Late observes how long after it fell due the scheduler made a time-triggered transition
	// (start, end, daily reset): the tick interval at best, the downtime after an outage.
	Late(d time.Duration)
	// Due reports how many campaigns are due now but not transitioned after a round of due
	// transitions: held by another replica, or left behind by a failing round.
	Due(n int)
	// BudgetChecked counts one campaign whose spend was compared with its budgets, by the
	// result (one of CheckResults).
	BudgetChecked(result string)
	// BudgetExhausted counts one campaign stopped because budget ("total" or "daily") is spent.
	BudgetExhausted(budget string)
}

// The results of a campaign's budget check.
const (
	// CheckUnchanged: the spend keeps the campaign in its state.
	CheckUnchanged = "unchanged"
	// CheckExhausted: a budget is spent; the campaign was stopped.
	CheckExhausted = "exhausted"
	// CheckReplenished: the budget has room again; the campaign was resumed.
	CheckReplenished = "replenished"
	// CheckSpendUnavailable: the spend could not be read; the check is retried next time.
	CheckSpendUnavailable = "spend_unavailable"
	// CheckFailed: the verdict could not be stored; the check is retried next time.
	CheckFailed = "failed"
)

// CheckResults lists every result BudgetChecked reports.
var CheckResults = []string{CheckUnchanged, CheckExhausted, CheckReplenished, CheckSpendUnavailable, CheckFailed}

// NopMetrics is a Metrics that records nothing: the default of a Scheduler.
type NopMetrics struct{}

// Transitioned implements Metrics.
func (NopMetrics) Transitioned(string, string, string) {}

// Late implements Metrics.
func (NopMetrics) Late(time.Duration) {}

// Due implements Metrics.
func (NopMetrics) Due(int) {}

// BudgetChecked implements Metrics.
func (NopMetrics) BudgetChecked(string) {}

// BudgetExhausted implements Metrics.
func (NopMetrics) BudgetExhausted(string) {}
