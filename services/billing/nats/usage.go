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

	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
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
	// caughtUp is the time up to which every accepted batch's units are recorded (see
	// AcceptedAsOf).
	caughtUp time.Time
	// drains counts the times the consumer found itself caught up (tests wait on it).
	drains int

	// beforeAck, when set (tests), runs after a commit and before the acks; false stops the
	// consumer there, as a crash would.
	beforeAck func() bool
}

// NewUsageConsumer returns the consumer storing into store.
func NewUsageConsumer(js jetstream.JetStream, store billing.UsageRecorder, cfg ConsumerConfig, logger *slog.Logger) *UsageConsumer {
	return &UsageConsumer{js: js, store: store, cfg: cfg.withDefaults(), logger: logger}
}

// AcceptedAsOf is the time up to which accepted events are recorded: every batch the event
// stream took before it has its units in usage_units (zero before the first fetch that found
// the consumer caught up). It is taken when a fetch ends with nothing pending on USAGE — every
// unit published before the fetch began is then recorded — and is no later than the oldest
// batch still in the event stream: the stream is a work queue, a writer acknowledges a batch
// only after publishing its units, so every batch received before the oldest one left has its
// units published. A batch dead-lettered by the writer has none. The time errs early, never
// late: the enforcing services then count a few units twice (their own, and billing's),
// never none.
func (c *UsageConsumer) AcceptedAsOf(time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.caughtUp
}

// caughtUpAt records that every unit published before start is recorded.
func (c *UsageConsumer) caughtUpAt(ctx context.Context, start time.Time) {
	t := start
	s, err := c.js.Stream(ctx, natsjs.StreamName)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound): // no event stream yet: no batch pending
	case err != nil:
		return // unknown: keep the last time
	default: // js.Stream asked the server for the stream's info just now
		if info := s.CachedInfo(); info.State.Msgs > 0 && info.State.FirstTime.Before(t) {
			t = info.State.FirstTime
		}
	}
	c.mu.Lock()
	if t.After(c.caughtUp) {
		c.caughtUp = t
	}
	c.drains++
	c.mu.Unlock()
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

// decode reads a message's units (usage.DecodeAll: one or an array; each unit's tenant is the
// subject's, its meter one recorded on the stream, its count bounded). A unit may come again
// in another message: it is keyed by its id.
func (c *UsageConsumer) decode(_ context.Context, msg jetstream.Msg) ([]billing.Unit, error) {
	units, err := usage.DecodeAll(msg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errPoison, err)
	}
	out := make([]billing.Unit, len(units))
	for i, u := range units {
		out[i] = billing.Unit{ID: u.ID, TenantID: u.Tenant, Day: billing.Day(u.Time), Meter: billing.Meter(u.Meter), Units: u.Units, Time: u.Time}
	}
	return out, nil
}

func (c *UsageConsumer) save(ctx context.Context, units []billing.Unit) error {
	_, err := c.store.RecordUnits(ctx, units)
	return err
}

// fetched is told when a fetch that began at start has been recorded and left nothing pending.
func (c *UsageConsumer) fetched(ctx context.Context, start time.Time) { c.caughtUpAt(ctx, start) }

// errPoison is a message that can never be recorded: it is terminated and logged, not retried.
var errPoison = errors.New("unreadable message")

// consume fetches, decodes every message, stores the records of the fetch in one transaction,
// and only then acknowledges.
func consume[T any](ctx context.Context, cons jetstream.Consumer, fetch int, logger *slog.Logger,
	decode func(context.Context, jetstream.Msg) ([]T, error), save func(context.Context, []T) error,
	drained func(ctx context.Context, start time.Time), beforeAck func() bool,
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
			// pending is what the stream held for the consumer after the last message of the
			// fetch: 0 means the fetch took everything published before it began.
			pending uint64
		)
		for msg := range batch.Messages() {
			if meta, err := msg.Metadata(); err == nil {
				pending = meta.NumPending
			}
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
		if len(msgs) == 0 {
			if drained != nil && (batch.Error() == nil || errors.Is(batch.Error(), nats.ErrTimeout)) {
				drained(ctx, start)
			}
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
		if pending == 0 && drained != nil {
			drained(ctx, start) // recorded: everything published before start is in
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
