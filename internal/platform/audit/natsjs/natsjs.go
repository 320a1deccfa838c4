// Package natsjs is the durable audit sink of services without a PostgreSQL database (ingest,
// analytics, the gateway): a record is stored in the JetStream stream AUDIT, on the subject
// audit.<service>, before Record returns, and a durable pull consumer per service
// (audit-<service>) delivers the stored records in batches to auth's AppendAuditRecords.
//
// Why each record reaches auth's log exactly once, whatever fails:
//
//   - Record returns nil only after JetStream acknowledged the publish: the stream fsyncs every
//     write (deploy/nats.conf), so the record is on disk. When it returns an error the access
//     layer logs the whole record, so it is not lost silently either.
//   - A publish retried after a lost acknowledgement carries the same Nats-Msg-Id (the record's
//     id): the stream drops it as a duplicate within its duplicate window.
//   - Records stay in the stream (a work queue, no age limit; when full, new records are
//     refused rather than old ones dropped) until their delivery is acknowledged, and a
//     delivery is acknowledged only after auth answered that it has the records. While auth is
//     down, the batch is handed back to the consumer (a delayed negative acknowledgement) and
//     retried with backoff up to 30 s: records wait in the stream for as long as the outage
//     lasts.
//   - A crash between auth's answer and the acknowledgement (or a lost acknowledgement) makes
//     the consumer offer the records again after the ack wait; auth skips record ids it already
//     holds, so the redelivery appends nothing twice.
//
// Who creates what: every service using the sink creates (or updates) the stream and its own
// consumer at start, idempotently; deploy/nats.conf gives each service's NATS user only those
// rights: publish on audit.<service>, the stream's create/update/info, and its own consumer's
// create (bound to its own subject), pull and acknowledgement. No service can read, consume or
// forge another's records.
package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit/auditpb"
)

// The audit stream.
const (
	StreamName    = "AUDIT"
	SubjectPrefix = "audit."
)

// Subject is the subject service's records are stored on.
func Subject(service string) string { return SubjectPrefix + service }

// ConsumerName is the durable consumer that delivers service's records.
func ConsumerName(service string) string { return "audit-" + service }

// Config holds the stream's and the consumer's settings.
type Config struct {
	// MaxBytes bounds the stream (default 256 MiB). When it is full, Record fails (and the
	// access layer logs the record) rather than older records being dropped.
	MaxBytes int64
	// Duplicates is the window in which a record published again is dropped (default 10 min).
	Duplicates time.Duration
	// Replicas of the stream (1 here; 3 in a JetStream cluster).
	Replicas int
	// AckWait is how long a batch handed to the delivery may stay unacknowledged before the
	// consumer offers it again, e.g. after a crash (default 30 s).
	AckWait time.Duration
}

// DefaultConfig are the defaults.
var DefaultConfig = Config{MaxBytes: 256 << 20, Duplicates: 10 * time.Minute, Replicas: 1, AckWait: 30 * time.Second}

const (
	publishTimeout = 5 * time.Second
	appendTimeout  = 10 * time.Second
	idleWait       = 5 * time.Second // how long one pull waits for a first record
	maxBackoff     = 30 * time.Second
)

// Sink stores the audit records of one service in the audit stream and delivers them to auth.
type Sink struct {
	js      jetstream.JetStream
	service string
	cfg     Config
	auth    auditpb.Appender
	logger  *slog.Logger
	cons    jetstream.Consumer
}

var _ audit.Sink = (*Sink)(nil)

// New creates (or updates) the audit stream and service's consumer and returns the sink of
// service, delivering to auth. Run must be running for records to leave the stream; with a nil
// auth (tests without an auth service) records are stored and never delivered.
func New(ctx context.Context, js jetstream.JetStream, service string, auth auditpb.Appender, logger *slog.Logger, cfg Config) (*Sink, error) {
	if service == "" || strings.ContainsAny(service, ".*> \t") {
		return nil, fmt.Errorf("audit sink: %q is not a service name", service)
	}
	if logger == nil {
		logger = slog.Default()
	}
	d := DefaultConfig
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = d.MaxBytes
	}
	if cfg.Duplicates <= 0 {
		cfg.Duplicates = d.Duplicates
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = d.Replicas
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = d.AckWait
	}
	s := &Sink{js: js, service: service, cfg: cfg, auth: auth, logger: logger}
	if err := s.ensure(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// ensure creates or updates the stream and the service's consumer.
func (s *Sink) ensure(ctx context.Context) error {
	if _, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: StreamName, Subjects: []string{SubjectPrefix + ">"},
		// A work queue: a record stays until its delivery to auth is acknowledged; no MaxAge, so
		// an auth outage of any length loses nothing; when full, new records are refused.
		Storage: jetstream.FileStorage, Retention: jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew,
		MaxBytes: s.cfg.MaxBytes, Duplicates: s.cfg.Duplicates, Replicas: s.cfg.Replicas, MaxMsgSize: 64 << 10,
	}); err != nil {
		return fmt.Errorf("create stream %s: %w", StreamName, err)
	}
	cons, err := s.js.CreateOrUpdateConsumer(ctx, StreamName, jetstream.ConsumerConfig{
		Durable: ConsumerName(s.service), FilterSubject: Subject(s.service),
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: s.cfg.AckWait, MaxDeliver: -1,
		MaxAckPending: 2 * auditpb.MaxBatch,
	})
	if err != nil {
		return fmt.Errorf("create consumer %s: %w", ConsumerName(s.service), err)
	}
	s.cons = cons
	return nil
}

// Record implements audit.Sink: it returns nil once the stream has stored r.
func (s *Sink) Record(ctx context.Context, r audit.Record) error {
	if r.ID == "" {
		r.ID = audit.NewID()
	}
	data, err := proto.Marshal(auditpb.ToProto(r))
	if err != nil {
		return fmt.Errorf("encode audit record: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	msg := &nats.Msg{Subject: Subject(s.service), Data: data}
	if _, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(r.ID), jetstream.WithExpectStream(StreamName)); err != nil {
		return fmt.Errorf("store audit record in stream %s: %w", StreamName, err)
	}
	return nil
}

// Run delivers stored records to auth until ctx ends, retrying with backoff (up to 30 s) while
// auth or NATS cannot be reached.
func (s *Sink) Run(ctx context.Context) error {
	if s.auth == nil {
		return errors.New("audit sink: no auth service to deliver to")
	}
	var backoff time.Duration
	for {
		msgs, err := s.pull(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil && len(msgs) > 0 {
			err = s.deliver(ctx, msgs)
		}
		if err == nil {
			backoff = 0
			continue
		}
		backoff = min(max(2*backoff, 250*time.Millisecond), maxBackoff)
		s.logger.WarnContext(ctx, "deliver audit records; will retry", "err", err, "records", len(msgs), "retry_in", backoff.String())
		for _, m := range msgs {
			_ = m.NakWithDelay(backoff) // if this is lost too, the ack wait hands them back
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
	}
}

// pull waits (a bounded time) for a first record, then takes what else is waiting, up to a batch.
func (s *Sink) pull(ctx context.Context) ([]jetstream.Msg, error) {
	waitCtx, cancel := context.WithTimeout(ctx, idleWait)
	defer cancel()
	first, err := s.cons.Next(jetstream.FetchContext(waitCtx))
	switch {
	case ctx.Err() != nil:
		return nil, nil
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return nil, nil // nothing waiting
	case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrConsumerDeleted):
		if err := s.ensure(ctx); err != nil { // e.g. the stream was recreated
			return nil, err
		}
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("pull audit records: %w", err)
	}
	msgs := []jetstream.Msg{first}
	if more, err := s.cons.FetchNoWait(auditpb.MaxBatch - 1); err == nil {
		for m := range more.Messages() {
			msgs = append(msgs, m)
		}
	}
	return msgs, nil
}

// deliver appends msgs' records to auth's log and, once auth has them, acknowledges them.
func (s *Sink) deliver(ctx context.Context, msgs []jetstream.Msg) error {
	req := &authv1.AppendAuditRecordsRequest{Records: make([]*authv1.AuditRecord, 0, len(msgs))}
	keep := msgs[:0:0]
	for _, m := range msgs {
		rec := &authv1.AuditRecord{}
		if err := proto.Unmarshal(m.Data(), rec); err != nil {
			// Only this service publishes here, so this is not a record of ours: keeping it would
			// stop every later record.
			s.logger.ErrorContext(ctx, "drop undecodable message from the audit stream", "err", err, "subject", m.Subject(), "bytes", len(m.Data()))
			_ = m.Term()
			continue
		}
		req.Records = append(req.Records, rec)
		keep = append(keep, m)
	}
	if len(keep) == 0 {
		return nil
	}
	callCtx, cancel := context.WithTimeout(ctx, appendTimeout)
	defer cancel()
	resp, err := s.auth.AppendAuditRecords(callCtx, req)
	if err != nil {
		return fmt.Errorf("append audit records: %w", err)
	}
	// Auth has them now. A crash or a lost ack from here on means redelivery, which auth skips.
	for _, m := range keep {
		ackCtx, cancel := context.WithTimeout(ctx, publishTimeout)
		if err := m.DoubleAck(ackCtx); err != nil {
			s.logger.DebugContext(ctx, "acknowledge delivered audit record; it will be delivered again (auth skips it)", "err", err)
		}
		cancel()
	}
	s.logger.DebugContext(ctx, "delivered audit records", "records", len(keep), "appended", resp.GetAppended(), "duplicates", resp.GetDuplicates())
	return nil
}
