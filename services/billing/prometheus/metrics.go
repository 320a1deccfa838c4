// Package prometheus reports the billing service's metering series on the service's registry,
// exported on its /metrics:
//
//	billing_quota_crossings_total{meter,kind}             limits first seen crossed by the metering job (kind soft|hard)
//	billing_metering_last_success_timestamp_seconds       when a metering round last succeeded (alert: BillingMeteringStalled)
//
// Series are per meter, not per tenant (a label per tenant would grow without bound; the audit
// log names the tenant).
package prometheus

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaignmesh/campaignmesh/services/billing"
)

// Metrics implements billing.CrossingMetrics.
type Metrics struct {
	crossings   *prometheus.CounterVec
	lastSuccess prometheus.Gauge
}

var _ billing.CrossingMetrics = (*Metrics)(nil)

// New registers the series on reg, every meter and kind at zero.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{crossings: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "billing_quota_crossings_total",
		Help: "Quota limits the metering job first saw crossed in a period, by meter and kind (soft, hard).",
	}, []string{"meter", "kind"}), lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "billing_metering_last_success_timestamp_seconds",
		Help: "Unix time a metering round last recomputed every open day and published the quotas (0: none yet).",
	})}
	reg.MustRegister(m.crossings, m.lastSuccess)
	for _, meter := range billing.Meters() {
		m.crossings.WithLabelValues(string(meter), "soft")
		if meter.Enforced() {
			m.crossings.WithLabelValues(string(meter), "hard")
		}
	}
	return m
}

// QuotaCrossed implements billing.CrossingMetrics.
func (m *Metrics) QuotaCrossed(meter billing.Meter, hard bool) {
	kind := "soft"
	if hard {
		kind = "hard"
	}
	m.crossings.WithLabelValues(string(meter), kind).Inc()
}

// MeteringSucceeded implements billing.CrossingMetrics.
func (m *Metrics) MeteringSucceeded(t time.Time) { m.lastSuccess.Set(float64(t.Unix())) }
