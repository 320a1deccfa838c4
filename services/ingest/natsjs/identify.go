package natsjs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/ingest"
)

// IdentifyPublisher implements ingest.IdentifyPublisher on the identify stream
// (natsjs.IdentifyStream, which ingest creates at start with natsjs.EnsureIdentifyStream): one
// message per batch on identify.<tenant>, not coalesced (identify events are a small share of
// the traffic, and one message per request keeps its message id stable for deduplication).
type IdentifyPublisher struct {
	js      jetstream.JetStream
	timeout time.Duration
}

var _ ingest.IdentifyPublisher = (*IdentifyPublisher)(nil)

// NewIdentifyPublisher returns the publisher over js; timeout bounds one publish (as
// Config.PublishTimeout does the event stream's).
func NewIdentifyPublisher(js jetstream.JetStream, timeout time.Duration) *IdentifyPublisher {
	return &IdentifyPublisher{js: js, timeout: timeout}
}

// PublishIdentify implements ingest.IdentifyPublisher. The message carries the request's trace
// context, as the event stream's do.
func (p *IdentifyPublisher) PublishIdentify(ctx context.Context, tenant, msgID string, events []*ingestv1.AcceptedEvent) error {
	data, err := natsjs.EncodeBatch(events)
	if err != nil {
		return fmt.Errorf("encode identify batch: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	hdr := nats.Header{}
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(http.Header(hdr)))
	if _, err := natsjs.PublishIdentify(ctx, p.js, tenant, msgID, data, hdr); err != nil {
		// The stream discards old messages when full, so a refusal for room is not the
		// sender's to back off from: both read as unavailable (resend).
		if errors.Is(err, natsjs.ErrUnavailable) || errors.Is(err, natsjs.ErrStreamFull) {
			return fmt.Errorf("%w: identify copy: %w", ingest.ErrStreamUnavailable, err)
		}
		return fmt.Errorf("identify copy: %w", err)
	}
	return nil
}
