package telemetry

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

// TraceExemplar returns the exemplar labels that link an observation made under ctx to its
// trace ({trace_id}), or nil when ctx has no sampled span (a trace that is not exported would
// be a dead link). Prometheus stores exemplars when scraping OpenMetrics (ServeAdmin offers it)
// with --enable-feature=exemplar-storage; Grafana then jumps from a latency bucket to Tempo.
func TraceExemplar(ctx context.Context) prometheus.Labels {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || !sc.IsSampled() {
		return nil
	}
	return prometheus.Labels{"trace_id": sc.TraceID().String()}
}

// ObserveWithTrace observes v on o with ctx's trace as the exemplar, when there is one.
func ObserveWithTrace(ctx context.Context, o prometheus.Observer, v float64) {
	if e := TraceExemplar(ctx); e != nil {
		if eo, ok := o.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(v, e)
			return
		}
	}
	o.Observe(v)
}
