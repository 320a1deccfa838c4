package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/structpb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// The identify stream. The event stream (EVENTS) is a work queue that the analytics writers
// consume, so no other service can read it (a second consumer would overlap theirs, and its
// acknowledgements would remove batches before ClickHouse has them). Identify events reach
// delivery through a stream of their own instead: batches (natsjs.EncodeBatch) of one tenant's
// accepted identify events on identify.<tenant id>, kept 7 days whatever is read.
const (
	IdentifyStream        = "IDENTIFY"
	IdentifySubjectPrefix = "identify."
	// IdentifyConsumerName is delivery's durable consumer of the stream.
	IdentifyConsumerName = "delivery-identify"
)

// EnsureIdentifyStream creates or updates the identify stream.
func EnsureIdentifyStream(ctx context.Context, js jetstream.JetStream) error {
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: IdentifyStream, Subjects: []string{IdentifySubjectPrefix + ">"},
		Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
		MaxAge: 7 * 24 * time.Hour, MaxBytes: 1 << 30, Duplicates: 10 * time.Minute, MaxMsgSize: 2 << 20,
		Compression: jetstream.S2Compression,
	})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", IdentifyStream, err)
	}
	return nil
}

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
		Name: "delivery_identify_events_total", Help: "Identify events read by delivery, by outcome (created, updated, unchanged, refused, skipped: no user id).",
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

// Run creates the durable consumer (from the first message the stream holds) and applies
// messages until ctx ends (then returns nil).
func (c *IdentifyConsumer) Run(ctx context.Context) error {
	if err := EnsureIdentifyStream(ctx, c.js); err != nil {
		return err
	}
	cons, err := c.js.CreateOrUpdateConsumer(ctx, IdentifyStream, jetstream.ConsumerConfig{
		Durable: IdentifyConsumerName, FilterSubject: IdentifySubjectPrefix + ">",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: -1,
		DeliverPolicy: jetstream.DeliverAllPolicy, MaxAckPending: 1000,
	})
	if err != nil {
		return fmt.Errorf("create consumer %s: %w", IdentifyConsumerName, err)
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
