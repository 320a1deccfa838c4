// Package prometheus reports the delivery senders' metrics (delivery.SenderMetrics) as
// Prometheus series on the service's registry, exported on its /metrics:
//
//	delivery_messages_total{channel,outcome}     attempts finished: sent, failed, unknown (maybe sent: reconciled)
//	delivery_retries_total{channel}              "not processed" answers (429, Twilio 20429…) put back for a retry
//	delivery_backoff_seconds{channel}            the waits chosen for those retries
//	delivery_reconciled_total{channel,result}    lookups of unclear outcomes: found (sent) or not_found (pending again)
//	delivery_leases_lost_total{channel}          outcomes not written because another sender took the row over
//
// Series are per channel, not per tenant (a label per tenant would grow without bound). Every
// series exists from the start, at zero, so that a rate or an alert on it has a value before
// the first message.
package prometheus

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// Metrics holds the delivery series; For gives one channel's SenderMetrics.
type Metrics struct {
	messages   *prometheus.CounterVec
	retries    *prometheus.CounterVec
	backoff    *prometheus.HistogramVec
	reconciled *prometheus.CounterVec
	leasesLost *prometheus.CounterVec
}

// New registers the delivery series on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delivery_messages_total",
			Help: "Provider attempts finished, by channel and outcome (sent, failed, unknown).",
		}, []string{"channel", "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delivery_retries_total",
			Help: "Provider answers meaning not processed (429, Twilio 20429, refused connections) put back for a retry.",
		}, []string{"channel"}),
		backoff: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "delivery_backoff_seconds",
			Help: "Waits chosen before retrying a not-processed attempt.",
			// From the first backoff (1 s) to the cap (5 min).
			Buckets: []float64{0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300},
		}, []string{"channel"}),
		reconciled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delivery_reconciled_total",
			Help: "Lookups that settled an unclear outcome: found (sent) or not_found (pending again).",
		}, []string{"channel", "result"}),
		leasesLost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delivery_leases_lost_total",
			Help: "Outcomes not written because another sender had taken the row over.",
		}, []string{"channel"}),
	}
	reg.MustRegister(m.messages, m.retries, m.backoff, m.reconciled, m.leasesLost)
	for _, ch := range delivery.Channels {
		c := string(ch)
		for _, o := range []delivery.RecipientState{delivery.StateSent, delivery.StateFailed, delivery.StateUnknown} {
			m.messages.WithLabelValues(c, string(o))
		}
		m.retries.WithLabelValues(c)
		m.backoff.WithLabelValues(c)
		m.reconciled.WithLabelValues(c, "found")
		m.reconciled.WithLabelValues(c, "not_found")
		m.leasesLost.WithLabelValues(c)
	}
	return m
}

// For returns the SenderMetrics of one channel's sender.
func (m *Metrics) For(ch delivery.Channel) delivery.SenderMetrics {
	return channelMetrics{m: m, ch: string(ch)}
}

type channelMetrics struct {
	m  *Metrics
	ch string
}

// Finished implements delivery.SenderMetrics. A pending outcome is a retry, counted by
// Retried.
func (c channelMetrics) Finished(_ string, s delivery.RecipientState) {
	switch s {
	case delivery.StateSent, delivery.StateFailed, delivery.StateUnknown:
		c.m.messages.WithLabelValues(c.ch, string(s)).Inc()
	}
}

// Retried implements delivery.SenderMetrics.
func (c channelMetrics) Retried(_ string, wait time.Duration) {
	c.m.retries.WithLabelValues(c.ch).Inc()
	c.m.backoff.WithLabelValues(c.ch).Observe(wait.Seconds())
}

// Reconciled implements delivery.SenderMetrics.
func (c channelMetrics) Reconciled(_ string, found bool) {
	r := "not_found"
	if found {
		r = "found"
	}
	c.m.reconciled.WithLabelValues(c.ch, r).Inc()
}

// LeaseLost implements delivery.SenderMetrics.
func (c channelMetrics) LeaseLost(string) { c.m.leasesLost.WithLabelValues(c.ch).Inc() }
