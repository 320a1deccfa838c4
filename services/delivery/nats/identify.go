package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/structpb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// IdentifyConsumer applies identify events to contacts (delivery.IdentifyTraits, then
// Audiences.Identify). A message is acknowledged only after every event in it was upserted
// (or refused for good: an invalid trait, identifiers of two contacts), so a crash or a
// database outage redelivers it; redelivery is harmless, an upsert of the same values changes
// nothing.
type IdentifyConsumer struct {
	js      jetstream.JetStream
	aud     *delivery.Audiences
	logger  *slog.Logger
	applied *prometheus.CounterVec
}

// NewIdentifyConsumer returns the consumer; reg (may be nil) receives its counter
// delivery_identify_events_total{outcome}.
func NewIdentifyConsumer(js jetstream.JetStream, aud *delivery.Audiences, reg prometheus.Registerer, logger *slog.Logger) (*IdentifyConsumer, error) {
	c := &IdentifyConsumer{js: js, aud: aud, logger: logger, applied: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "delivery_identify_events_total", Help: "Identify events read by delivery, by outcome (created, updated, unchanged, refused, skipped: no user id, or a Segment group or alias call).",
	}, []string{"outcome"})}
	if reg != nil {
		if err := reg.Register(c.applied); err != nil {
			return nil, fmt.Errorf("register identify metrics: %w", err)
		}
	}
	return c, nil
}

// retryDelay is how long a message waits before redelivery after a failure that may pass
// (the database down).
const retryDelay = 2 * time.Second

// Run creates the durable consumer (natsjs.IdentifyConsumerConfig: from the first message the
// stream holds) and applies messages until ctx ends (then returns nil). ingest creates the
// identify stream (natsjs.EnsureIdentifyStream), and delivery has no right to: until it exists
// (a first start, ingest not yet up) the creation is retried.
func (c *IdentifyConsumer) Run(ctx context.Context) error {
	cons, err := c.consumer(ctx)
	if err != nil || cons == nil {
		return err
	}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.logger.WarnContext(ctx, "fetch identify events", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for msg := range batch.Messages() {
			c.handle(ctx, msg)
		}
	}
	return nil
}

// consumer creates (or updates) the durable consumer, waiting for the stream; nil, nil when ctx
// ends first.
func (c *IdentifyConsumer) consumer(ctx context.Context) (jetstream.Consumer, error) {
	for {
		cons, err := c.js.CreateOrUpdateConsumer(ctx, natsjs.IdentifyStream, natsjs.IdentifyConsumerConfig())
		switch {
		case err == nil:
			return cons, nil
		case ctx.Err() != nil:
			return nil, nil
		case !errors.Is(err, jetstream.ErrStreamNotFound) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, nats.ErrNoResponders):
			return nil, fmt.Errorf("create consumer %s: %w", natsjs.IdentifyConsumerName, err)
		}
		c.logger.WarnContext(ctx, "create the identify consumer (the stream is ingest's to create); retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(retryDelay):
		}
	}
}

// handle applies one message's events and acknowledges it, or asks for its redelivery.
func (c *IdentifyConsumer) handle(ctx context.Context, msg jetstream.Msg) {
	b, err := natsjs.DecodeBatch(msg.Data())
	if err != nil { // never readable: keeping it would block nothing but retry forever
		c.logger.ErrorContext(ctx, "drop an unreadable identify batch", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	for _, ae := range b.GetEvents() {
		if err := c.apply(ctx, ae); err != nil {
			c.logger.WarnContext(ctx, "apply identify event; redelivering", "tenant", ae.GetTenantId(), "err", err)
			_ = msg.NakWithDelay(retryDelay)
			return
		}
	}
	if err := msg.DoubleAck(ctx); err != nil {
		c.logger.WarnContext(ctx, "acknowledge identify batch", "err", err)
	}
}

// apply upserts the contact of one event; only an error that may pass is returned.
func (c *IdentifyConsumer) apply(ctx context.Context, ae *ingestv1.AcceptedEvent) error {
	e := ae.GetEvent()
	if e.GetType() != ingestv1.EventType_EVENT_TYPE_IDENTIFY {
		return nil
	}
	traits := map[string]string{}
	for k, v := range e.GetProperties().GetFields() {
		if sv, ok := v.GetKind().(*structpb.Value_StringValue); ok {
			traits[k] = sv.StringValue
		}
	}
	u, ok := delivery.IdentifyTraits(e.GetUserId(), traits)
	if !ok {
		c.applied.WithLabelValues("skipped").Inc()
		return nil
	}
	res, err := c.aud.Identify(ctx, ae.GetTenantId(), u)
	var de *apperr.Error
	switch {
	case err == nil:
		c.applied.WithLabelValues(string(res.Outcome)).Inc()
		return nil
	case errors.As(err, &de) && de.Code != apperr.Unavailable && de.Code != apperr.Internal:
		// The event's traits can never make a valid contact: counted, not retried.
		c.applied.WithLabelValues("refused").Inc()
		c.logger.InfoContext(ctx, "identify event refused", "tenant", ae.GetTenantId(), "event_id", e.GetEventId(), "reason", de.Reason)
		return nil
	}
	return err
}
