package natsjs

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The identify stream: ingest's copy of each accepted batch's identify events, one message
// (EncodeBatch) per batch on identify.<tenant id>, for delivery to keep its contacts current.
// The event stream (EVENTS) is a work queue the analytics writers consume, so no other service
// can read it (a second consumer would overlap theirs, and its acknowledgements would remove
// batches before ClickHouse has them): identify events reach delivery through a stream of
// their own instead. ingest creates (or updates) the stream at start and publishes; delivery
// only reads it, through its durable consumer IdentifyConsumerName (deploy/nats.conf).
const (
	IdentifyStream        = "IDENTIFY"
	IdentifySubjectPrefix = "identify."
	// IdentifyConsumerName is delivery's durable consumer of the stream; its name is a right
	// in deploy/nats.conf.
	IdentifyConsumerName = "delivery-identify"
)

// IdentifySubject is the subject of tenant's identify events.
func IdentifySubject(tenant string) string { return IdentifySubjectPrefix + tenant }

// IdentifyStreamConfig is the identify stream's definition.
//
// Limits retention, not a work queue: a message stays for its age whatever is acknowledged,
// so a consumer recreated at its first message (or a second reader added later) reads what
// is kept. Discard old: when the stream is full its oldest messages go, never the new ones,
// because a refused copy would fail ingest's request (Service.Ingest) and so tie the intake's
// availability to delivery keeping up; the events themselves stay in EVENTS and ClickHouse.
// 7 days (the event stream's MaxAge) outlasts any delivery outage an operator lets run; 1 GiB
// holds about 5 million identify events (about 200 bytes each as encoded, more than usual
// traits make), a week of 8 a second, and the server reserves it against its JetStream
// storage at creation (deploy/nats.conf counts it). The duplicate window is the event
// stream's: a client's retry within 10 minutes is dropped by message id (<batch id>.identify).
// One message per batch: a request is at most 500 KiB (ingest.DefaultLimits), so its identify
// events encoded fit in one message within the server's 1 MiB payload limit.
func IdentifyStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: IdentifyStream, Subjects: []string{IdentifySubjectPrefix + ">"},
		Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
		MaxAge: 7 * 24 * time.Hour, MaxBytes: 1 << 30, Duplicates: 10 * time.Minute, MaxMsgSize: 2 << 20,
		Compression: jetstream.S2Compression,
	}
}

// EnsureIdentifyStream creates or updates the identify stream (ingest does at start).
func EnsureIdentifyStream(ctx context.Context, js jetstream.JetStream) error {
	if _, err := js.CreateOrUpdateStream(ctx, IdentifyStreamConfig()); err != nil {
		if noRoom(err) {
			return fmt.Errorf("create stream %s: %w: the NATS server's JetStream storage limit has no room for its %d bytes",
				IdentifyStream, err, IdentifyStreamConfig().MaxBytes)
		}
		return fmt.Errorf("create stream %s: %w", IdentifyStream, err)
	}
	return nil
}

// IdentifyConsumerConfig is delivery's durable consumer of the identify stream: from the first
// message the stream holds, each acknowledged explicitly after its events are applied,
// redelivered without limit (a database outage must not drop contacts). The single filter
// travels in the create request's subject, where deploy/nats.conf checks it.
func IdentifyConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: IdentifyConsumerName, FilterSubject: IdentifySubjectPrefix + ">",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: -1,
		DeliverPolicy: jetstream.DeliverAllPolicy, MaxAckPending: 1000,
	}
}

// PublishIdentify stores data (EncodeBatch of a batch's identify events) on tenant's identify
// subject with message id msgID (ingest's: <batch id>.identify) and returns once JetStream has acknowledged
// it, with Publish's error rules (ErrUnavailable when NATS cannot be reached).
func PublishIdentify(ctx context.Context, js jetstream.JetStream, tenant, msgID string, data []byte, hdr nats.Header) (*jetstream.PubAck, error) {
	return publishTo(ctx, js, IdentifyStream, IdentifySubject(tenant), data, hdr, jetstream.WithMsgID(msgID))
}
