// Package writer moves accepted events from JetStream into ClickHouse.
//
// Exactly-once effect: the writer reads one durable pull consumer in stream order, inserts each
// collected set of batches as one ClickHouse block (atomic on a MergeTree table) with every
// row's stream sequence, and only then acknowledges the messages. After a crash between insert
// and ack, JetStream redelivers; the writer first reads its watermark — max(stream_seq) in
// ClickHouse — and acknowledges without inserting every message at or below it, so nothing is
// inserted twice. Because sets are inserted whole and in order, everything at or below the
// watermark is stored. Client retries that reached the stream twice (same tenant and event_id
// in two batches) collapse in the ReplacingMergeTree; queries count with FINAL or distinct
// event ids. One writer per stream keeps the order argument valid.
//
// A message that cannot be decoded is a poison message: it goes to the dead-letter stream with
// its reason and is acknowledged, so it never blocks the pipeline. So is a batch holding an event
// whose tenant is not the one its subject (events.<tenant>) names: only ingest may publish there
// (NATS permissions), and it publishes each tenant's events on that tenant's subject, so a
// mismatch is forged or broken and is never stored for either tenant. While ClickHouse is down the
// writer retries with backoff and keeps its messages in progress; the backlog stays in the
// stream and drains on recovery.
package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

// ConsumerName is the writer's durable consumer.
const ConsumerName = "analytics-writer"

// Config bounds a write: a set is inserted when it holds BatchRows rows or MaxWait has passed.
type Config struct {
	BatchRows int
	MaxWait   time.Duration
}

// DefaultConfig is 10,000 rows or 1 s.
var DefaultConfig = Config{BatchRows: 10000, MaxWait: time.Second}

// Writer is the JetStream → ClickHouse writer.
type Writer struct {
	js     jetstream.JetStream
	conn   driver.Conn
	cfg    Config
	logger *slog.Logger

	// seqOffset is added to the stream's sequences (see clickhouse.SeqOffset).
	seqOffset uint64

	// crashAfterInsert, in tests, stops Run right after an insert and before the acks.
	crashAfterInsert func() bool

	inserted, dead prometheus.Counter
	latency        prometheus.Histogram
	backlog, lag   prometheus.Gauge
}

// New returns a writer; its metrics are registered with reg.
func New(js jetstream.JetStream, conn driver.Conn, cfg Config, logger *slog.Logger, reg prometheus.Registerer) *Writer {
	w := &Writer{js: js, conn: conn, cfg: cfg, logger: logger,
		inserted: prometheus.NewCounter(prometheus.CounterOpts{Name: "writer_inserted_rows_total", Help: "Event rows inserted into ClickHouse."}),
		dead:     prometheus.NewCounter(prometheus.CounterOpts{Name: "writer_dead_letters_total", Help: "Messages sent to the dead-letter stream."}),
		latency:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "writer_insert_seconds", Help: "ClickHouse insert latency.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		backlog:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "writer_backlog_messages", Help: "Batches in the stream not yet written."}),
		lag:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "writer_lag_seconds", Help: "Time from ingest's reception of the newest inserted event to its insert."}),
	}
	if reg != nil {
		reg.MustRegister(w.inserted, w.dead, w.latency, w.backlog, w.lag)
	}
	return w
}

// CrashAfterInserts is fault injection for tests: after n inserts the process exits at once,
// between an insert and its acknowledgements, as a kill -9 at the worst moment would.
func (w *Writer) CrashAfterInserts(n int, exit func()) {
	count := 0
	w.crashAfterInsert = func() bool {
		count++
		if count >= n {
			exit()
		}
		return false
	}
}

// Run writes until ctx ends.
func (w *Writer) Run(ctx context.Context) error {
	var watermark uint64
	if err := w.retry(ctx, nil, "read the watermark", func() error {
		var err error
		watermark, err = clickhouse.SettledWatermark(ctx, w.conn)
		return err
	}); err != nil {
		return nil // ctx ended
	}
	// Start over: the consumer is recreated so that it delivers, in stream order, every batch
	// still in the stream — the work-queue stream (ingest's; wait for it) keeps exactly the
	// batches not yet acknowledged. Batches a crashed writer left unacknowledged thus come again
	// first, instead of after the ack wait behind newer ones, which keeps "everything up to the
	// watermark is stored" true; those at or below the watermark are acknowledged unwritten.
	var cons jetstream.Consumer
	if err := w.retry(ctx, nil, "create the writer's consumer", func() error {
		var apiErr *jetstream.APIError
		if err := w.js.DeleteConsumer(ctx, natsjs.StreamName, ConsumerName); err != nil &&
			!(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeConsumerNotFound) {
			return err
		}
		var err error
		cons, err = w.js.CreateOrUpdateConsumer(ctx, natsjs.StreamName, jetstream.ConsumerConfig{
			Durable: ConsumerName, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
			MaxAckPending: 100000, MaxDeliver: -1, DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		return err
	}); err != nil {
		return nil
	}
	// Stored sequences are offset per stream incarnation: a recreated stream restarts at 1.
	if err := w.retry(ctx, nil, "read the stream epoch", func() error {
		stream, err := w.js.Stream(ctx, natsjs.StreamName)
		if err != nil {
			return err
		}
		w.seqOffset, err = clickhouse.SeqOffset(ctx, w.conn, uint64(stream.CachedInfo().Created.UnixNano()))
		return err
	}); err != nil {
		return nil
	}
	w.logger.Info("writer started", "watermark", watermark, "seq_offset", w.seqOffset)
	for ctx.Err() == nil {
		msgs, rows, err := w.collect(ctx, cons)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			w.logger.Warn("fetch from stream; retrying", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		if len(msgs) == 0 {
			continue
		}
		fresh, maxSeq := rowsAbove(rows, watermark)
		if len(fresh) > 0 {
			failed := false
			if err := w.retry(ctx, msgs, "insert into clickhouse", func() error {
				// After a failed attempt the insert may still have landed (the answer was lost):
				// inserting again would count the block twice in the rollups, so look first.
				if failed {
					if stored, err := clickhouse.SettledWatermark(ctx, w.conn); err != nil {
						return err
					} else if stored >= maxSeq {
						w.logger.Info("insert had landed although its answer was lost", "seq", maxSeq)
						return nil
					}
				}
				err := w.insert(ctx, msgs, fresh)
				failed = err != nil
				return err
			}); err != nil {
				return nil // ctx ended; unacked messages are redelivered to the next run
			}
			watermark = max(watermark, maxSeq)
			if w.crashAfterInsert != nil && w.crashAfterInsert() {
				return nil
			}
		}
		for _, m := range msgs {
			if err := m.msg.Ack(); err != nil {
				w.logger.Warn("ack batch (it will be redelivered and skipped)", "err", err)
			}
		}
		if info, err := cons.Info(ctx); err == nil {
			w.backlog.Set(float64(info.NumPending + uint64(info.NumAckPending)))
		}
	}
	return nil
}

type fetched struct {
	msg jetstream.Msg
	seq uint64
	ctx trace.SpanContext
}

// collect gathers messages until BatchRows rows or MaxWait, decoding each; poison messages go
// to the dead-letter stream.
func (w *Writer) collect(ctx context.Context, cons jetstream.Consumer) ([]fetched, []clickhouse.Row, error) {
	deadline := time.Now().Add(w.cfg.MaxWait)
	var msgs []fetched
	var rows []clickhouse.Row
	for len(rows) < w.cfg.BatchRows {
		wait := time.Until(deadline)
		if wait < 10*time.Millisecond {
			break
		}
		batch, err := cons.Fetch(200, jetstream.FetchMaxWait(wait))
		if err != nil {
			return msgs, rows, err
		}
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				w.deadLetter(ctx, m, "no metadata: "+err.Error())
				continue
			}
			var b ingestv1.AcceptedBatch
			if err := proto.Unmarshal(m.Data(), &b); err != nil || len(b.GetEvents()) == 0 {
				w.deadLetter(ctx, m, fmt.Sprintf("undecodable batch: %v", err))
				continue
			}
			if reason := tenantMismatch(m.Subject(), &b); reason != "" {
				w.deadLetter(ctx, m, reason)
				continue
			}
			sc := trace.SpanContextFromContext(otel.GetTextMapPropagator().Extract(ctx, propagation.HeaderCarrier(http.Header(m.Headers()))))
			msgs = append(msgs, fetched{msg: m, seq: meta.Sequence.Stream, ctx: sc})
			for _, e := range b.GetEvents() {
				rows = append(rows, clickhouse.Row{Event: e, Seq: w.seqOffset + meta.Sequence.Stream})
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return msgs, rows, err
		}
	}
	return msgs, rows, nil
}

// tenantMismatch says why batch b may not be stored from subject, or "" when every event's
// tenant is the subject's.
func tenantMismatch(subject string, b *ingestv1.AcceptedBatch) string {
	tenant, ok := strings.CutPrefix(subject, natsjs.SubjectPrefix)
	if !ok || tenant == "" || strings.Contains(tenant, ".") {
		return fmt.Sprintf("tenant mismatch: subject %q names no tenant", subject)
	}
	for i, e := range b.GetEvents() {
		if e.GetTenantId() != tenant {
			return fmt.Sprintf("tenant mismatch: event %d has tenant %q on subject %q", i, e.GetTenantId(), subject)
		}
	}
	return ""
}

func rowsAbove(rows []clickhouse.Row, watermark uint64) ([]clickhouse.Row, uint64) {
	var out []clickhouse.Row
	var top uint64
	for _, r := range rows {
		if r.Seq > watermark {
			out = append(out, r)
			top = max(top, r.Seq)
		}
	}
	return out, top
}

func (w *Writer) insert(ctx context.Context, msgs []fetched, rows []clickhouse.Row) error {
	links := make([]trace.Link, 0, min(len(msgs), 128))
	for _, m := range msgs[:min(len(msgs), 128)] {
		if m.ctx.IsValid() {
			links = append(links, trace.Link{SpanContext: m.ctx})
		}
	}
	// The insert span continues the trace of the first batch and links the others.
	parent := ctx
	if len(links) > 0 {
		parent = trace.ContextWithRemoteSpanContext(ctx, links[0].SpanContext)
	}
	ctx, span := otel.Tracer("analytics/writer").Start(parent, "writer.insert", trace.WithLinks(links...))
	defer span.End()
	start := time.Now()
	if err := clickhouse.Insert(ctx, w.conn, rows); err != nil {
		span.RecordError(err)
		return err
	}
	w.latency.Observe(time.Since(start).Seconds())
	w.inserted.Add(float64(len(rows)))
	newest := rows[len(rows)-1].Event.GetReceivedAt().AsTime()
	w.lag.Set(time.Since(newest).Seconds())
	return nil
}

// retry runs f until it succeeds, backing off up to 10 s and keeping msgs in progress so the
// stream does not redeliver them meanwhile. It returns an error only when ctx ends.
func (w *Writer) retry(ctx context.Context, msgs []fetched, what string, f func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		w.logger.Warn(what+"; retrying", "err", err, "retry_in", backoff.String())
		for _, m := range msgs {
			_ = m.msg.InProgress()
		}
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (w *Writer) deadLetter(ctx context.Context, m jetstream.Msg, reason string) {
	msg := &nats.Msg{Subject: natsjs.DeadLetterSubj, Data: m.Data(), Header: nats.Header{}}
	msg.Header.Set("Cm-Reason", reason)
	if meta, err := m.Metadata(); err == nil {
		msg.Header.Set("Cm-Stream-Seq", fmt.Sprint(meta.Sequence.Stream))
	}
	if _, err := w.js.PublishMsg(ctx, msg); err != nil {
		w.logger.Error("dead-letter a poison message; leaving it for redelivery", "err", err, "reason", reason)
		return
	}
	w.dead.Inc()
	w.logger.Warn("poison message moved to the dead-letter stream", "reason", reason)
	_ = m.Ack()
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
