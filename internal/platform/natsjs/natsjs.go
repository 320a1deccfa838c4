// Package natsjs is the event stream on NATS JetStream: the stream and consumer definitions
// (created idempotently at start) and a publisher that returns only once the server has stored
// a batch. One JetStream message carries one accepted batch; its message id makes a retried
// batch a duplicate that the stream drops within the duplicate window.
package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The event stream. Subjects are events.<tenant id>.
const (
	StreamName     = "EVENTS"
	SubjectPrefix  = "events."
	DeadLetterName = "EVENTS_DLQ"
	DeadLetterSubj = "events_dlq"
)

// StreamConfig holds the documented stream settings.
type StreamConfig struct {
	// MaxBytes bounds the stream's storage (default 1 GiB). When full, new batches are refused
	// (ingest answers RESOURCE_EXHAUSTED) rather than old ones dropped.
	MaxBytes int64
	// MaxAge bounds how long an unwritten batch is kept (default 7 days).
	MaxAge time.Duration
	// Duplicates is the window in which a batch with a known message id is dropped (default 10 min).
	Duplicates time.Duration
	// Replicas of the stream (1 here; 3 in a JetStream cluster).
	Replicas int
}

// DefaultStream are the defaults.
var DefaultStream = StreamConfig{MaxBytes: 1 << 30, MaxAge: 7 * 24 * time.Hour, Duplicates: 10 * time.Minute, Replicas: 1}

// Connect dials NATS with reconnects forever (the caller's calls fail fast while it is away).
func Connect(url, name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(500*time.Millisecond))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("open jetstream: %w", err)
	}
	return nc, js, nil
}

// EnsureStreams creates or updates the event stream and its dead-letter stream.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, c StreamConfig) error {
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: StreamName, Subjects: []string{SubjectPrefix + ">"},
		// Work queue: a batch stays until the writer acknowledges it (after ClickHouse has it),
		// even while no consumer exists; when MaxBytes is reached new batches are refused.
		Storage: jetstream.FileStorage, Retention: jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew,
		MaxBytes: c.MaxBytes, MaxAge: c.MaxAge, Duplicates: c.Duplicates, Replicas: c.Replicas,
		MaxMsgSize: 2 << 20,
	}); err != nil {
		if s, serr := js.Stream(ctx, StreamName); serr == nil && s.CachedInfo().Config.Retention != jetstream.WorkQueuePolicy {
			return fmt.Errorf("stream %s exists with %s retention from an older version; it must be a work queue: drain it, then delete it (nats stream rm %s, or in development rm -rf .state/nats)",
				StreamName, s.CachedInfo().Config.Retention, StreamName)
		}
		return fmt.Errorf("create stream %s: %w", StreamName, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: DeadLetterName, Subjects: []string{DeadLetterSubj},
		Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
		MaxBytes: c.MaxBytes / 4, MaxAge: 30 * 24 * time.Hour, Replicas: c.Replicas,
	}); err != nil {
		return fmt.Errorf("create stream %s: %w", DeadLetterName, err)
	}
	return nil
}

// errCodeStoreFailed is JetStream's "stream store failed" (e.g. maximum bytes exceeded).
const errCodeStoreFailed jetstream.ErrorCode = 10077

// ErrStreamFull is returned when the stream has no room: senders should back off.
var ErrStreamFull = errors.New("event stream is full")

// ErrUnavailable is returned when NATS cannot be reached.
var ErrUnavailable = errors.New("event stream is unavailable")

// Publish stores one batch for tenant and returns once JetStream has acknowledged it. The
// message id deduplicates retries. Trace context travels in headers (hdr may be nil).
func Publish(ctx context.Context, js jetstream.JetStream, tenant, msgID string, data []byte, hdr nats.Header) (*jetstream.PubAck, error) {
	msg := &nats.Msg{Subject: SubjectPrefix + tenant, Data: data, Header: hdr}
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(StreamName))
	if err == nil {
		return ack, nil
	}
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == errCodeStoreFailed || strings.Contains(apiErr.Description, "exceeded")):
		return nil, fmt.Errorf("%w: %v", ErrStreamFull, err)
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrConnectionReconnecting):
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil, fmt.Errorf("publish batch: %w", err)
}
