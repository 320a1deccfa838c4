// Package prometheus reports the billing domain's metrics as Prometheus series on the
// service's registry. The meter-event reporter's (billing.ReportMetrics):
//
//	billing_meter_events_total{meter,outcome}   send attempts: acked, retry, rejected, too_old
//	billing_reports_pending                      meter-event reports not yet acknowledged
//	billing_report_oldest_pending_seconds        age of the oldest of them (0 when none)
//
// Every meter × outcome series exists from the start, at zero, so a rate or an alert on it
// has a value before the first event.
package prometheus

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaignmesh/campaignmesh/services/billing"
)

// ReportMetrics implements billing.ReportMetrics on Prometheus collectors.
type ReportMetrics struct {
	sent    *prometheus.CounterVec
	pending prometheus.Gauge
	oldest  prometheus.Gauge
}

var _ billing.ReportMetrics = (*ReportMetrics)(nil)

// NewReportMetrics registers the reporter's series on reg.
func NewReportMetrics(reg prometheus.Registerer) *ReportMetrics {
	m := &ReportMetrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "billing_meter_events_total",
			Help: "Meter-event send attempts to Stripe, by meter and outcome (acked, retry, rejected, too_old).",
		}, []string{"meter", "outcome"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "billing_reports_pending",
			Help: "Meter-event reports written to the outbox and not yet acknowledged by Stripe.",
		}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "billing_report_oldest_pending_seconds",
			Help: "Age of the oldest pending meter-event report (0 when none).",
		}),
	}
	reg.MustRegister(m.sent, m.pending, m.oldest)
	for _, meter := range billing.Meters() {
		for _, o := range []string{billing.ReportAcked, "retry", billing.ReportRejected, billing.ReportTooOld} {
			m.sent.WithLabelValues(string(meter), o)
		}
	}
	return m
}

// MeterEventSent counts one send attempt.
func (m *ReportMetrics) MeterEventSent(meter billing.Meter, outcome string) {
	m.sent.WithLabelValues(string(meter), outcome).Inc()
}

// ReportsPending sets the pending reports and the oldest one's age.
func (m *ReportMetrics) ReportsPending(n int, oldestAge time.Duration) {
	m.pending.Set(float64(n))
	m.oldest.Set(oldestAge.Seconds())
}
