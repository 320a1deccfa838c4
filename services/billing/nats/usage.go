// Package nats is the billing service's NATS adapter: the consumer that records every unit
// other services publish on the USAGE stream once (UsageConsumer: events_accepted from the
// analytics writers, analytics_queries from analytics), and the publisher of the quotas
// (QuotaPublisher).
//
// Why counting is exact. The consumer fetches units, stores the fetch's units in one
// PostgreSQL transaction in which an id already stored inserts nothing, and acknowledges the
// messages only after the commit:
//
//   - killed before the commit: nothing is stored, the messages are redelivered and stored then;
//   - killed after the commit, before (some) acks: the redelivered units insert nothing;
//   - the store down: the fetch is not acknowledged and is redelivered (NakWithDelay);
//   - a publisher's retry: the same id, dropped by the stream within its duplicate window and
//     inserting nothing after it.
//
// So every unit is recorded exactly once, and the metering job recomputes usage from the
// records (billing.Metering). Billing does not read the event stream: it is a work queue that
// only the analytics writers read (they publish the events_accepted units).
package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/usage"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

// UsageConsumerName is billing's durable consumer of the USAGE stream.
const UsageConsumerName = "billing-usage"

// UsageConsumerConfig is the durable pull consumer of the USAGE stream: acknowledged after the
// commit, redelivered without limit, from the first unit the stream holds.
func UsageConsumerConfig(ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: UsageConsumerName, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait,
		MaxAckPending: 10000, MaxDeliver: -1, DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// ConsumerConfig are the consumer's settings.
type ConsumerConfig struct {
	// Fetch is the most units stored in one transaction (default 500).
	Fetch int
	// AckWait is how long a fetched unit waits for its ack before it is redelivered
	// (default 30s).
	AckWait time.Duration
}

func (c ConsumerConfig) withDefaults() ConsumerConfig {
	if c.Fetch <= 0 {
		c.Fetch = 500
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	return c
}

// retryDelay is how long a fetch that could not be stored waits to be redelivered.
const retryDelay = 2 * time.Second

// UsageConsumer records the units of the USAGE stream (usage_units), each once by its id.
type UsageConsumer struct {
	js     jetstream.JetStream
	store  billing.UsageRecorder
	cfg    ConsumerConfig
	logger *slog.Logger

	mu sync.Mutex
	// accepted is the latest time of an events_accepted unit recorded; caughtUp when a fetch
	// last found nothing pending (see AcceptedAsOf).
	accepted, caughtUp time.Time

	// beforeAck, when set (tests), runs after a commit and before the acks; false stops the
	// consumer there, as a crash would.
	beforeAck func() bool
}

// NewUsageConsumer returns the consumer storing into store.
func NewUsageConsumer(js jetstream.JetStream, store billing.UsageRecorder, cfg ConsumerConfig, logger *slog.Logger) *UsageConsumer {
	return &UsageConsumer{js: js, store: store, cfg: cfg.withDefaults(), logger: logger}
}

// AcceptedAsOf is the time up to which accepted events are recorded: when a fetch last found
// the stream drained, if that is later than the latest events_accepted unit recorded, else that
// unit's time (zero before either). The writers publish a batch's units before they acknowledge
// it, within seconds of its receipt, so units of events received after this time may still come.
func (c *UsageConsumer) AcceptedAsOf(time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.caughtUp.After(c.accepted) {
		return c.caughtUp
	}
	return c.accepted
}

// Run creates the USAGE stream when missing (usage.EnsureStream: analytics may be first) and
// the durable consumer, then records units until ctx ends (then it returns nil).
func (c *UsageConsumer) Run(ctx context.Context) error {
	var cons jetstream.Consumer
	for {
		_, err := usage.EnsureStream(ctx, c.js)
		if err == nil {
			cons, err = c.js.CreateOrUpdateConsumer(ctx, usage.StreamName, UsageConsumerConfig(c.cfg.AckWait))
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		c.logger.WarnContext(ctx, "open the usage stream's consumer; retrying", "error", err)
		sleep(ctx, retryDelay)
	}
	return consume(ctx, cons, c.cfg.Fetch, c.logger, c.decode, c.save, c.fetched, c.beforeAck)
}

// decode reads one unit (usage.Decode: its tenant is the subject's, its meter one recorded on
// the stream, its count bounded).
func (c *UsageConsumer) decode(_ context.Context, msg jetstream.Msg) ([]billing.Unit, error) {
	u, err := usage.Decode(msg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errPoison, err)
	}
	return []billing.Unit{{ID: u.ID, TenantID: u.Tenant, Day: billing.Day(u.Time), Meter: billing.Meter(u.Meter), Units: u.Units, Time: u.Time}}, nil
}

func (c *UsageConsumer) save(ctx context.Context, units []billing.Unit) error {
	if _, err := c.store.RecordUnits(ctx, units); err != nil {
		return err
	}
	c.mu.Lock()
	for _, u := range units {
		if u.Meter == billing.EventsAccepted && u.Time.After(c.accepted) {
			c.accepted = u.Time
		}
	}
	c.mu.Unlock()
	return nil
}

func (c *UsageConsumer) fetched(start time.Time, n int) {
	if n > 0 {
		return
	}
	c.mu.Lock()
	c.caughtUp = start
	c.mu.Unlock()
}

// errPoison is a message that can never be recorded: it is terminated and logged, not retried.
var errPoison = errors.New("unreadable message")

// consume fetches, decodes every message, stores the records of the fetch in one transaction,
// and only then acknowledges.
func consume[T any](ctx context.Context, cons jetstream.Consumer, fetch int, logger *slog.Logger,
	decode func(context.Context, jetstream.Msg) ([]T, error), save func(context.Context, []T) error,
	fetched func(start time.Time, n int), beforeAck func() bool,
) error {
	name := cons.CachedInfo().Name
	for ctx.Err() == nil {
		start := time.Now()
		batch, err := cons.Fetch(fetch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			logger.WarnContext(ctx, "fetch usage messages", "consumer", name, "error", err)
			sleep(ctx, time.Second)
			continue
		}
		var (
			msgs []jetstream.Msg
			rows []T
		)
		for msg := range batch.Messages() {
			rs, err := decode(ctx, msg)
			if err != nil {
				logger.ErrorContext(ctx, "drop an unreadable usage message", "consumer", name, "subject", msg.Subject(), "error", err)
				_ = msg.Term()
				continue
			}
			msgs, rows = append(msgs, msg), append(rows, rs...)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			logger.WarnContext(ctx, "fetch usage messages", "consumer", name, "error", err)
		}
		if fetched != nil {
			fetched(start, len(msgs))
		}
		if len(msgs) == 0 {
			continue
		}
		if err := save(ctx, rows); err != nil {
			logger.WarnContext(ctx, "store usage records; redelivering", "consumer", name, "messages", len(msgs), "error", err)
			for _, m := range msgs {
				_ = m.NakWithDelay(retryDelay)
			}
			continue
		}
		if beforeAck != nil && !beforeAck() {
			return nil
		}
		for _, m := range msgs {
			if err := m.Ack(); err != nil {
				logger.WarnContext(ctx, "acknowledge usage message (it will be redelivered and count nothing)", "error", err)
			}
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
