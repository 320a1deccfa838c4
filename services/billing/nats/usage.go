package nats

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/services/billing"
)

// The USAGE stream (internal/platform/usage, helper U's, once merged: its StreamConfig and
// Decode replace usageStream and decodeUnit here) and billing's consumer of it.
const (
	UsageStream        = "USAGE"
	usageSubjectPrefix = "usage."
	// UsageConsumerName is billing's durable consumer of UsageStream.
	UsageConsumerName = "billing-usage"
)

// UsageConsumerConfig is the durable pull consumer of the USAGE stream, with the metering
// consumer's ack and redelivery rules.
func UsageConsumerConfig(ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: UsageConsumerName, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait,
		MaxAckPending: 10000, MaxDeliver: -1, DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// UsageConsumer records the units of the USAGE stream (usage_units), each once by its id.
type UsageConsumer struct {
	js     jetstream.JetStream
	store  billing.UsageRecorder
	cfg    ConsumerConfig
	logger *slog.Logger

	beforeAck func() bool
}

// NewUsageConsumer returns the consumer storing into store.
func NewUsageConsumer(js jetstream.JetStream, store billing.UsageRecorder, cfg ConsumerConfig, logger *slog.Logger) *UsageConsumer {
	return &UsageConsumer{js: js, store: store, cfg: cfg.withDefaults(), logger: logger}
}

// Run creates the durable consumer, waiting for the stream (the publishers create it), then
// records units until ctx ends (then it returns nil).
func (c *UsageConsumer) Run(ctx context.Context) error {
	var cons jetstream.Consumer
	for {
		var err error
		cons, err = c.js.CreateOrUpdateConsumer(ctx, UsageStream, UsageConsumerConfig(c.cfg.AckWait))
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		c.logger.WarnContext(ctx, "create the usage consumer (the stream is its publishers' to create); retrying", "error", err)
		sleep(ctx, retryDelay)
	}
	save := func(ctx context.Context, units []billing.Unit) error {
		_, err := c.store.RecordUnits(ctx, units)
		return err
	}
	return consume(ctx, cons, c.cfg.Fetch, c.logger, decodeUnit, save, nil, c.beforeAck)
}

// unitJSON is a USAGE message's body: {"id","tenant","meter","units","time"}.
type unitJSON struct {
	ID     string    `json:"id"`
	Tenant string    `json:"tenant"`
	Meter  string    `json:"meter"`
	Units  int64     `json:"units"`
	Time   time.Time `json:"time"`
}

// decodeUnit reads one unit: its tenant must be the subject's (the publishers' permissions are
// checked against subjects, not bodies), its meter a counter recorded this way
// (analytics_queries), its units 1 to a million, its id 1 to 64 bytes.
func decodeUnit(_ context.Context, msg jetstream.Msg) ([]billing.Unit, error) {
	tenant, ok := strings.CutPrefix(msg.Subject(), usageSubjectPrefix)
	if !ok || tenant == "" || strings.ContainsAny(tenant, ".*>") {
		return nil, fmt.Errorf("%w: subject %q", errPoison, msg.Subject())
	}
	var u unitJSON
	if err := json.Unmarshal(msg.Data(), &u); err != nil {
		return nil, fmt.Errorf("%w: %v", errPoison, err)
	}
	switch {
	case u.Tenant != tenant:
		return nil, fmt.Errorf("%w: unit %s of tenant %q on the subject of %q", errPoison, u.ID, u.Tenant, tenant)
	case u.ID == "" || len(u.ID) > 64:
		return nil, fmt.Errorf("%w: unit id of %d bytes", errPoison, len(u.ID))
	case billing.Meter(u.Meter) != billing.AnalyticsQueries:
		return nil, fmt.Errorf("%w: unit %s of meter %q", errPoison, u.ID, u.Meter)
	case u.Units < 1 || u.Units > 1_000_000:
		return nil, fmt.Errorf("%w: unit %s of %d units", errPoison, u.ID, u.Units)
	case u.Time.IsZero():
		return nil, fmt.Errorf("%w: unit %s without a time", errPoison, u.ID)
	}
	return []billing.Unit{{ID: u.ID, TenantID: tenant, Day: billing.Day(u.Time), Meter: billing.Meter(u.Meter), Units: u.Units}}, nil
}
