// Package prometheus reports the campaigns domain's metrics (campaigns.Metrics) as Prometheus
// series on the service's registry, exported on its /metrics:
//
//	campaigns_scheduler_transitions_total{action,from,to}  transitions the scheduler made
//	campaigns_scheduler_lateness_seconds                   how long after falling due a start, end or daily reset was made
//	campaigns_scheduler_due_campaigns                      campaigns due now but not transitioned after the last round
//	campaigns_budget_checks_total{result}                  campaigns whose spend was compared with their budgets
//	campaigns_budget_exhaustions_total{budget}             campaigns stopped because their total or daily budget is spent
//
// Every series the scheduler can move exists from the start, at zero, so that a rate or an
// alert on it has a value before the first event.
package prometheus

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaignmesh/campaignmesh/services/campaigns"
)

// Metrics implements campaigns.Metrics on Prometheus collectors.
type Metrics struct {
	transitions *prometheus.CounterVec
	lateness    prometheus.Histogram
	due         prometheus.Gauge
	checks      *prometheus.CounterVec
	exhaustions *prometheus.CounterVec
}

var _ campaigns.Metrics = (*Metrics)(nil)

// New registers the campaigns series on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "campaigns_scheduler_transitions_total",
			Help: "Campaign transitions made by the scheduler, by action and states.",
		}, []string{"action", "from", "to"}),
		lateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "campaigns_scheduler_lateness_seconds",
			Help: "How long after falling due the scheduler made a start, end or daily reset.",
			// From one tick (1 s by default) to the downtime of a day.
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600},
		}),
		due: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "campaigns_scheduler_due_campaigns",
			Help: "Campaigns due now but not transitioned after the scheduler's last round.",
		}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "campaigns_budget_checks_total",
			Help: "Campaigns whose spend the scheduler compared with their budgets, by result.",
		}, []string{"result"}),
		exhaustions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "campaigns_budget_exhaustions_total",
			Help: "Campaigns stopped because their total or daily budget is spent.",
		}, []string{"budget"}),
	}
	reg.MustRegister(m.transitions, m.lateness, m.due, m.checks, m.exhaustions)
	for _, a := range campaigns.AutoActions {
		for _, from := range campaigns.States {
			if to, err := campaigns.Next(from, a); err == nil {
				m.transitions.WithLabelValues(string(a), string(from), string(to))
			}
		}
	}
	for _, r := range campaigns.CheckResults {
		m.checks.WithLabelValues(r)
	}
	for _, b := range []campaigns.Exhaustion{campaigns.ExhaustedTotal, campaigns.ExhaustedDaily} {
		m.exhaustions.WithLabelValues(string(b))
	}
	return m
}

// Transitioned implements campaigns.Metrics.
func (m *Metrics) Transitioned(action, from, to string) {
	m.transitions.WithLabelValues(action, from, to).Inc()
}

// Late implements campaigns.Metrics.
func (m *Metrics) Late(d time.Duration) { m.lateness.Observe(d.Seconds()) }

// Due implements campaigns.Metrics.
func (m *Metrics) Due(n int) { m.due.Set(float64(n)) }

// BudgetChecked implements campaigns.Metrics.
func (m *Metrics) BudgetChecked(result string) { m.checks.WithLabelValues(result).Inc() }

// BudgetExhausted implements campaigns.Metrics.
func (m *Metrics) BudgetExhausted(budget string) { m.exhaustions.WithLabelValues(budget).Inc() }
