// Package natsjs is the event stream on NATS JetStream: the stream and its partitions
// (Partition, Subject), the writers' consumers and leases (WriterConsumerConfig,
// AcquireWriterLease), the batch encoding, and a publish that returns only once the server has
// stored a message. A message carries accepted events of one tenant's partition; its message id
// makes a retried message a duplicate that the stream drops within the duplicate window.
package natsjs

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/config"
)

// The event stream. Subjects are events.<tenant id>.<partition> (Subject); messages stored
// before partitions are on events.<tenant id>.
const (
	StreamName     = "EVENTS"
	SubjectPrefix  = "events."
	DeadLetterName = "EVENTS_DLQ"
	DeadLetterSubj = "events_dlq"
)

// StreamConfig holds the documented stream settings.
type StreamConfig struct {
	// MaxBytes bounds the stream's storage (default 4 GiB). When full, new batches are refused
	// (ingest answers RESOURCE_EXHAUSTED) rather than old ones dropped. JetStream counts the
	// messages as stored before the stream's compression (data, headers, subject and 34 bytes
	// of record), so the stream's S2 shrinks the disk a full stream takes, not what fits in
	// it: the batch encoding (EncodeBatch: compact, then S2-compressed by ingest) is what
	// makes more events fit. The server reserves MaxBytes (and a quarter more for the
	// dead-letter stream) against its JetStream storage limit when the stream is created, so
	// that limit must allow it. The default holds at least 21 minutes of ClickHouse outage at
	// the bench's landed rate (95,000 events/s, 35 bytes an event stored with 100-event
	// requests split over 8 partitions, no merging; BenchmarkStreamBytes, docs/operations.md).
	MaxBytes int64
	// MaxAge bounds how long an unwritten batch is kept (default 7 days).
	MaxAge time.Duration
	// Duplicates is the window in which a batch with a known message id is dropped (default 10 min).
	Duplicates time.Duration
	// Replicas of the stream (1 here; 3 in a JetStream cluster).
	Replicas int
}

// DefaultStream are the defaults.
var DefaultStream = StreamConfig{MaxBytes: 4 << 30, MaxAge: 7 * 24 * time.Hour, Duplicates: 10 * time.Minute, Replicas: 1}

// Option configures Connect.
type Option func(*connectOptions)

type connectOptions struct {
	user, password, caFile string
}

// WithUser authenticates as user with password. Replies (JetStream answers, pulled messages,
// publish acknowledgements) then arrive on the inbox prefix _INBOX_<user>, the only one the
// server's permissions (deploy/nats.conf) let that user subscribe to.
func WithUser(user, password string) Option {
	return func(o *connectOptions) { o.user, o.password = user, password }
}

// WithCA trusts the CA certificates in file (PEM) for a tls:// server URL, for deployments where
// NATS traffic leaves the host.
func WithCA(file string) Option {
	return func(o *connectOptions) { o.caFile = file }
}

// Connect dials NATS with reconnects forever (the caller's calls fail fast while it is away).
func Connect(url, name string, opts ...Option) (*nats.Conn, jetstream.JetStream, error) {
	var o connectOptions
	for _, opt := range opts {
		opt(&o)
	}
	nopts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(500 * time.Millisecond)}
	if o.user != "" {
		nopts = append(nopts, nats.UserInfo(o.user, o.password), nats.CustomInboxPrefix(InboxPrefix(o.user)))
	}
	if o.caFile != "" {
		nopts = append(nopts, nats.RootCAs(o.caFile))
	}
	nc, err := nats.Connect(url, nopts...)
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

// InboxPrefix is the reply inbox prefix of a NATS user (see deploy/nats.conf).
func InboxPrefix(user string) string { return "_INBOX_" + user }

// ClientFlags are a service's NATS connection settings.
type ClientFlags struct {
	URL, User, PasswordFile, CA string
}

// RegisterFlags defines -nats-url, -nats-user, -nats-password-file and -nats-ca on fs.
func (c *ClientFlags) RegisterFlags(fs *flag.FlagSet, defaultUser string) {
	fs.StringVar(&c.URL, "nats-url", "nats://127.0.0.1:14222", "NATS server with JetStream (tls://… for TLS)")
	fs.StringVar(&c.User, "nats-user", defaultUser, "NATS user (deploy/nats.conf); empty: connect without credentials")
	fs.StringVar(&c.PasswordFile, "nats-password-file", "", "file holding the NATS user's password")
	fs.StringVar(&c.CA, "nats-ca", "", "PEM file of the CA that signed the NATS server's certificate (with a tls:// URL)")
}

// Check reports settings that cannot work.
func (c ClientFlags) Check(p *config.Problems) {
	p.Check(c.User == "" || c.PasswordFile != "", "-nats-password-file is required with -nats-user (or set -nats-user to empty)")
}

// Connect reads the password file and connects as name.
func (c ClientFlags) Connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	var opts []Option
	if c.User != "" {
		pw, err := config.ReadSecret(c.PasswordFile)
		if err != nil {
			return nil, nil, fmt.Errorf("nats password: %w", err)
		}
		opts = append(opts, WithUser(c.User, pw))
	}
	if c.CA != "" {
		opts = append(opts, WithCA(c.CA))
	}
	return Connect(c.URL, name, opts...)
}

// EnsureStreams creates or updates the event stream and its dead-letter stream. Both store
// their blocks S2-compressed. A stream created uncompressed by an older version is updated in
// place, keeping its messages; the server compresses the blocks it fills after its next
// restart (it applies a compression change when it loads the stream), and the uncompressed
// blocks go as the writer drains them.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, c StreamConfig) error {
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: StreamName, Subjects: []string{SubjectPrefix + ">"},
		// Work queue: a batch stays until the writer acknowledges it (after ClickHouse has it),
		// even while no consumer exists; when MaxBytes is reached new batches are refused.
		Storage: jetstream.FileStorage, Retention: jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew,
		MaxBytes: c.MaxBytes, MaxAge: c.MaxAge, Duplicates: c.Duplicates, Replicas: c.Replicas,
		MaxMsgSize: 2 << 20, Compression: jetstream.S2Compression,
	}); err != nil {
		if s, serr := js.Stream(ctx, StreamName); serr == nil && s.CachedInfo().Config.Retention != jetstream.WorkQueuePolicy {
			return fmt.Errorf("stream %s exists with %s retention from an older version; it must be a work queue: drain it, then delete it (nats stream rm %s, or in development rm -rf .state/nats)",
				StreamName, s.CachedInfo().Config.Retention, StreamName)
		}
		if noRoom(err) {
			return fmt.Errorf("create stream %s: %w: the NATS server's JetStream storage limit has no room for %d bytes (-stream-max-bytes) and a quarter more for %s; free disk where NATS stores (its default limit is 75%% of the free disk when it starts) or lower -stream-max-bytes",
				StreamName, err, c.MaxBytes, DeadLetterName)
		}
		return fmt.Errorf("create stream %s: %w", StreamName, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: DeadLetterName, Subjects: []string{DeadLetterSubj},
		Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
		MaxBytes: c.MaxBytes / 4, MaxAge: 30 * 24 * time.Hour, Replicas: c.Replicas, Compression: jetstream.S2Compression,
	}); err != nil {
		return fmt.Errorf("create stream %s: %w", DeadLetterName, err)
	}
	return nil
}

// errCodeNoStorage is JetStream's "insufficient storage resources available": a stream's
// MaxBytes does not fit in what the server may still reserve.
const errCodeNoStorage jetstream.ErrorCode = 10047

func noRoom(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeNoStorage
}

// errCodeStoreFailed is JetStream's "stream store failed" (e.g. maximum bytes exceeded).
const errCodeStoreFailed jetstream.ErrorCode = 10077

// ErrStreamFull is returned when the stream has no room: senders should back off.
var ErrStreamFull = errors.New("event stream is full")

// ErrUnavailable is returned when NATS cannot be reached.
var ErrUnavailable = errors.New("event stream is unavailable")

// Publish stores one batch for tenant on the subject of the form before partitions,
// events.<tenant>, and returns once JetStream has acknowledged it. Ingest publishes on
// partitions (PublishPart); this form stays for what reads or writes older messages (the
// writer's tests of a backlog from before partitions). The message id deduplicates retries.
// Trace context travels in headers (hdr may be nil).
func Publish(ctx context.Context, js jetstream.JetStream, tenant, msgID string, data []byte, hdr nats.Header) (*jetstream.PubAck, error) {
	return publish(ctx, js, SubjectPrefix+tenant, msgID, data, hdr)
}

// PublishPart stores one message of partition part of tenant's events on its subject
// (Subject) and returns once JetStream has acknowledged it, with Publish's message id, header
// and error rules.
func PublishPart(ctx context.Context, js jetstream.JetStream, tenant string, part int, msgID string, data []byte, hdr nats.Header) (*jetstream.PubAck, error) {
	return publish(ctx, js, Subject(tenant, part), msgID, data, hdr)
}

// PublishDeadLetter stores data (a batch, EncodeBatch) in the dead-letter stream with hdr
// (which says why: Cm-Reason at least) and returns once JetStream has acknowledged it, with
// Publish's error rules.
func PublishDeadLetter(ctx context.Context, js jetstream.JetStream, data []byte, hdr nats.Header) (*jetstream.PubAck, error) {
	return publishTo(ctx, js, DeadLetterName, DeadLetterSubj, data, hdr)
}

func publish(ctx context.Context, js jetstream.JetStream, subject, msgID string, data []byte, hdr nats.Header) (*jetstream.PubAck, error) {
	return publishTo(ctx, js, StreamName, subject, data, hdr, jetstream.WithMsgID(msgID))
}

func publishTo(ctx context.Context, js jetstream.JetStream, stream, subject string, data []byte, hdr nats.Header, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	msg := &nats.Msg{Subject: subject, Data: data, Header: hdr}
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	ack, err := js.PublishMsg(ctx, msg, append(opts, jetstream.WithExpectStream(stream))...)
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
