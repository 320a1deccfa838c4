// Package natsjs publishes ingest's accepted batches to the event stream on NATS JetStream: it
// implements the domain's ingest.Publisher. One batch is one message on events.<tenant>
// (internal/platform/natsjs owns the stream), its batch id is the message id that makes a
// resent batch a duplicate, and the caller's trace context travels in the message headers so
// the writer's spans join the call's trace.
package natsjs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/ingest"
)

// Publisher stores batches in the event stream through js.
type Publisher struct {
	js                  jetstream.JetStream
	accepted, published prometheus.Counter
	publishTime         prometheus.Histogram
}

var _ ingest.Publisher = (*Publisher)(nil)

// NewPublisher returns the publisher over js; its metrics are registered with reg (which may
// be nil).
func NewPublisher(js jetstream.JetStream, reg prometheus.Registerer) *Publisher {
	p := &Publisher{js: js,
		accepted:  prometheus.NewCounter(prometheus.CounterOpts{Name: "ingest_events_accepted_total", Help: "Events stored in the stream."}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "ingest_batches_published_total", Help: "Batches stored in the stream."}),
		publishTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ingest_publish_seconds", Help: "Time for JetStream to store a batch.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14)}),
	}
	if reg != nil {
		reg.MustRegister(p.accepted, p.published, p.publishTime)
	}
	return p
}

// Publish implements ingest.Publisher: it returns once JetStream has stored the batch.
func (p *Publisher) Publish(ctx context.Context, tenant, batchID string, batch []*ingestv1.AcceptedEvent) error {
	data, err := natsjs.EncodeBatch(batch)
	if err != nil {
		return err
	}
	hdr := nats.Header{}
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(http.Header(hdr)))
	start := time.Now()
	if _, err := natsjs.Publish(ctx, p.js, tenant, batchID, data, hdr); err != nil {
		return classify(err)
	}
	p.publishTime.Observe(time.Since(start).Seconds())
	p.published.Inc()
	p.accepted.Add(float64(len(batch)))
	return nil
}

// classify says which of the domain's stream errors err is, keeping the cause for the log.
func classify(err error) error {
	switch {
	case errors.Is(err, natsjs.ErrStreamFull):
		return fmt.Errorf("%w: %w", ingest.ErrStreamFull, err)
	case errors.Is(err, natsjs.ErrUnavailable):
		return fmt.Errorf("%w: %w", ingest.ErrStreamUnavailable, err)
	}
	return err
}
