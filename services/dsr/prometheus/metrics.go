// Package prometheus reports the dsr runner's figures (dsr.Metrics) as Prometheus series on the
// service's registry, exported on its /metrics:
//
//	cm_dsr_requests_open                     requests not yet ended
//	cm_dsr_requests_overdue                  open requests past their deadline
//	cm_dsr_oldest_open_request_age_seconds   age of the oldest open request (0: none)
//	cm_dsr_requests_by_state{state}          open requests per state
package prometheus

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaignmesh/campaignmesh/services/dsr"
)

// Metrics implements dsr.Metrics.
type Metrics struct {
	open, overdue, oldest prometheus.Gauge
	byState               *prometheus.GaugeVec
}

var _ dsr.Metrics = (*Metrics)(nil)

// New registers the series on reg, every one at zero.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		open:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "cm_dsr_requests_open", Help: "Data-subject requests not yet ended."}),
		overdue: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cm_dsr_requests_overdue", Help: "Open data-subject requests past their deadline."}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cm_dsr_oldest_open_request_age_seconds",
			Help: "Age of the oldest open data-subject request (0 when none is open)."}),
		byState: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cm_dsr_requests_by_state", Help: "Open data-subject requests per state."}, []string{"state"}),
	}
	reg.MustRegister(m.open, m.overdue, m.oldest, m.byState)
	for _, s := range dsr.OpenStates {
		m.byState.WithLabelValues(string(s))
	}
	return m
}

// Stats implements dsr.Metrics.
func (m *Metrics) Stats(s dsr.OpenStats, now time.Time) {
	m.open.Set(float64(s.Open))
	m.overdue.Set(float64(s.Overdue))
	age := 0.0
	if !s.Oldest.IsZero() {
		age = now.Sub(s.Oldest).Seconds()
	}
	m.oldest.Set(age)
	for _, st := range dsr.OpenStates {
		m.byState.WithLabelValues(string(st)).Set(float64(s.ByState[st]))
	}
}
