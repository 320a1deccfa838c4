// Package nats is the billing service's NATS adapter: the metering consumers that record every
// accepted event batch and every unit other services publish on the USAGE stream, each once
// (MeteringConsumer, UsageConsumer), and the publisher of the quotas (QuotaPublisher).
//
// Why counting is exact. A consumer fetches messages, turns each into keyed records (an event
// batch by its message id and origin sequence, a unit by its id), stores the fetch's records
// in one PostgreSQL transaction in which a key already stored inserts nothing, and
// acknowledges the messages only after the commit:
//
//   - killed before the commit: nothing is stored, the messages are redelivered and stored then;
//   - killed after the commit, before (some) acks: the redelivered messages insert nothing;
//   - the store down: the fetch is not acknowledged and is redelivered (NakWithDelay).
//
// So every message is recorded exactly once, and the metering job recomputes usage from the
// records (billing.Metering).
//
// The event stream is a work queue (natsjs.EnsureStreams): a message leaves it when the
// analytics writer acknowledges it, and the server refuses a second unfiltered consumer on it
// (error 10099, "multiple non-filtered consumers not allowed on workqueue stream"). Billing
// therefore reads a stream of its own, MeteringStream, which sources the event stream: the
// server copies each batch into it as the batch is stored, keeping its subject and message id
// and adding its origin sequence (header Nats-Stream-Source). The copy is the server's and
// happens before the writer (a remote client that first writes to ClickHouse) can acknowledge
// the original; a batch the writer acknowledged before the copy was made — the metering stream
// full or absent — is not counted.
package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

// The metering stream and its consumer.
const (
	// MeteringStream holds a copy of every accepted batch until billing has counted it.
	MeteringStream = "EVENTS_METERING"
	// MeteringConsumerName is billing's durable consumer of MeteringStream.
	MeteringConsumerName = "billing-metering"
)

// MeteringStreamConfig sources the event stream into a work queue of billing's: a copy leaves
// it once counted. It holds up to maxBytes (DiscardNew: when full the server stops copying and
// retries, rather than drop what is not yet counted).
func MeteringStreamConfig(maxBytes int64) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: MeteringStream, Sources: []*jetstream.StreamSource{{Name: natsjs.StreamName}},
		Storage: jetstream.FileStorage, Retention: jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew,
		MaxBytes: maxBytes, MaxAge: natsjs.DefaultStream.MaxAge, Duplicates: natsjs.DefaultStream.Duplicates,
		Compression: jetstream.S2Compression, Replicas: 1,
	}
}

// DefaultMeteringBytes bounds the metering stream (1 GiB).
const DefaultMeteringBytes = 1 << 30

// MeteringConsumerConfig is the durable pull consumer: acknowledged after the commit,
// redelivered without limit from the first message the stream holds.
func MeteringConsumerConfig(ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: MeteringConsumerName, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait,
		MaxAckPending: 10000, MaxDeliver: -1, DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// EnsureMeteringStream creates or updates the metering stream.
func EnsureMeteringStream(ctx context.Context, js jetstream.JetStream, maxBytes int64) error {
	if _, err := js.CreateOrUpdateStream(ctx, MeteringStreamConfig(maxBytes)); err != nil {
		return fmt.Errorf("create stream %s: %w", MeteringStream, err)
	}
	return nil
}

// ConsumerConfig are a consumer's settings.
type ConsumerConfig struct {
	// Fetch is the most messages stored in one transaction (default 500).
	Fetch int
	// AckWait is how long a fetched message waits for its ack before it is redelivered
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

// MeteringConsumer records the accepted batches of the metering stream (accepted_batches).
type MeteringConsumer struct {
	js     jetstream.JetStream
	store  billing.UsageRecorder
	cfg    ConsumerConfig
	logger *slog.Logger

	mu sync.Mutex
	// asOf is the receipt time up to which batches are counted (see AsOf).
	asOf time.Time
	// caughtUp is when a fetch last found nothing pending.
	caughtUp time.Time

	// beforeAck, when set (tests), runs after a commit and before the acks; false stops the
	// consumer there, as a crash would.
	beforeAck func() bool
}

// NewMeteringConsumer returns the consumer storing into store.
func NewMeteringConsumer(js jetstream.JetStream, store billing.UsageRecorder, cfg ConsumerConfig, logger *slog.Logger) *MeteringConsumer {
	return &MeteringConsumer{js: js, store: store, cfg: cfg.withDefaults(), logger: logger}
}

// AsOf is the time up to which accepted events are recorded: when a fetch last found the
// stream drained, if that is later than the receipt time of the last batch recorded, else that
// receipt time (zero before either; now is not used: a batch may arrive at any moment after).
func (c *MeteringConsumer) AsOf(time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.caughtUp.After(c.asOf) {
		return c.caughtUp
	}
	return c.asOf
}

// Run creates the metering stream and consumer, then records batches until ctx ends (then it
// returns nil).
func (c *MeteringConsumer) Run(ctx context.Context) error {
	if err := EnsureMeteringStream(ctx, c.js, DefaultMeteringBytes); err != nil {
		return err
	}
	cons, err := c.js.CreateOrUpdateConsumer(ctx, MeteringStream, MeteringConsumerConfig(c.cfg.AckWait))
	if err != nil {
		return fmt.Errorf("create consumer %s: %w", MeteringConsumerName, err)
	}
	return consume(ctx, cons, c.cfg.Fetch, c.logger, c.decode, c.save, c.fetched, c.beforeAck)
}

func (c *MeteringConsumer) save(ctx context.Context, rows []billing.AcceptedBatch) error {
	_, err := c.store.RecordAcceptedBatches(ctx, rows)
	if err != nil {
		return err
	}
	c.mu.Lock()
	for _, r := range rows {
		if r.ReceivedAt.After(c.asOf) {
			c.asOf = r.ReceivedAt
		}
	}
	c.mu.Unlock()
	return nil
}

func (c *MeteringConsumer) fetched(start time.Time, n int) {
	if n > 0 {
		return
	}
	c.mu.Lock()
	c.caughtUp = start
	c.mu.Unlock()
}

// errPoison is a message that can never be recorded: it is terminated and logged, not retried.
var errPoison = errors.New("unreadable message")

// decode turns one copied batch into its records: per UTC day of receipt, the events of the
// subject's tenant. Events naming another tenant are not counted (a consumer trusts the
// subject's tenant, which the publisher's permissions fix, not the message's content).
func (c *MeteringConsumer) decode(ctx context.Context, msg jetstream.Msg) ([]billing.AcceptedBatch, error) {
	key, err := streamKey(msg.Headers())
	if err != nil {
		return nil, err
	}
	tenant, _, ok := natsjs.ParseSubject(msg.Subject())
	if !ok {
		return nil, fmt.Errorf("%w: subject %q", errPoison, msg.Subject())
	}
	b, err := natsjs.DecodeBatch(msg.Data())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errPoison, err)
	}
	byDay := map[time.Time]*billing.AcceptedBatch{}
	var out []billing.AcceptedBatch
	var order []time.Time
	foreign := 0
	for _, e := range b.GetEvents() {
		if e.GetTenantId() != tenant {
			foreign++
			continue
		}
		at := e.GetReceivedAt().AsTime().UTC()
		d := billing.Day(at)
		r, ok := byDay[d]
		if !ok {
			r = &billing.AcceptedBatch{StreamKey: key, TenantID: tenant, Day: d, ReceivedAt: at}
			byDay[d] = r
			order = append(order, d)
		}
		r.Events++
		if at.After(r.ReceivedAt) {
			r.ReceivedAt = at
		}
	}
	if foreign > 0 {
		c.logger.WarnContext(ctx, "batch holds events of another tenant than its subject's; not counted", "subject", msg.Subject(), "events", foreign)
	}
	for _, d := range order {
		out = append(out, *byDay[d])
	}
	return out, nil
}

// sourceHeader is where the server writes the origin of a sourced message.
const sourceHeader = "Nats-Stream-Source"

// streamKey is a copied batch's key: ingest's message id (the same for a redelivery of the
// copy) and the batch's sequence in the event stream (so a message id reused after the
// stream's duplicate window, a batch stored twice, counts twice as the stream holds it twice).
func streamKey(h nats.Header) (string, error) {
	// Nats-Stream-Source: "<stream> <sequence> <filter> <destination> <source hash>"
	src := strings.Fields(h.Get(sourceHeader))
	if len(src) < 2 || src[0] != natsjs.StreamName {
		return "", fmt.Errorf("%w: no origin sequence of stream %s", errPoison, natsjs.StreamName)
	}
	return h.Get(nats.MsgIdHdr) + "@" + src[1], nil
}

// consume is the loop both consumers share: fetch, decode every message, store the records of
// the fetch in one transaction, and only then acknowledge.
func consume[T any](ctx context.Context, cons jetstream.Consumer, fetch int, logger *slog.Logger,
	decode func(context.Context, jetstream.Msg) ([]T, error), save func(context.Context, []T) error,
	fetched func(start time.Time, n int), beforeAck func() bool,
) error {
	for ctx.Err() == nil {
		start := time.Now()
		batch, err := cons.Fetch(fetch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			logger.WarnContext(ctx, "fetch usage messages", "consumer", cons.CachedInfo().Name, "error", err)
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
				logger.ErrorContext(ctx, "drop an unreadable usage message", "consumer", cons.CachedInfo().Name, "subject", msg.Subject(), "error", err)
				_ = msg.Term()
				continue
			}
			msgs, rows = append(msgs, msg), append(rows, rs...)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			logger.WarnContext(ctx, "fetch usage messages", "consumer", cons.CachedInfo().Name, "error", err)
		}
		if fetched != nil {
			fetched(start, len(msgs))
		}
		if len(msgs) == 0 {
			continue
		}
		if err := save(ctx, rows); err != nil {
			logger.WarnContext(ctx, "store usage records; redelivering", "consumer", cons.CachedInfo().Name, "messages", len(msgs), "error", err)
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
