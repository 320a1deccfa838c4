// Package writer moves accepted events from JetStream into the analytics store (a Sink;
// ClickHouse in production, services/analytics/clickhouse.EventSink).
//
// Exactly-once effect, per stream partition and month. Every row has a partition p (PartOf: the
// tenant and subject of its event, natsjs.Partition — computed here, not taken from the
// message), a month m (MonthOf its corrected time: the partition of ClickHouse's events_local)
// and a sequence s (its batch's stream sequence plus the offset of the stream's incarnation).
// The writer reads one durable pull consumer in stream order, collects a set of batches, and
// splits it into one block per shard (sinks[p % len(sinks)]) and month, each inserted with one
// Sink.Insert: rows of one month (one part of one table, all or nothing) plus a commit per
// partition in the block listing the distinct sequences of its rows. A batch's rows of one
// (p, m) are in one block, so:
//
//	the rows of (p, m, s) are stored  ⇔  a stored commit of (p, m) lists s.
//
// The watermark W[p, m] is the highest sequence of the stored commits of (p, m) (Sink.Settle).
// A row with s > W[p, m] is not stored (its commit would have raised W); a row with s ≤ W[p, m]
// is stored exactly when Sink.Stored lists s for (p, m). The writer inserts the rows that are
// not stored — fresh ones, and late ones Stored does not list — and acknowledges the messages
// only after every block of the set returned success. The decision is exact for each row
// whatever order batches come in: stream order only keeps the Stored look-ups rare.
//   - A crash between insert and ack: the batches are redelivered, their rows are at or below
//     W and listed: acknowledged, not inserted.
//   - A crash between the blocks of one set (two months, or two shards): the blocks that landed
//     are listed by their commits, the others are not; only those are inserted.
//   - An insert that failed may have landed (the answer was lost): before trying it again the
//     writer settles the shard and looks up the block's first commit (Stored): the block is
//     atomic, so one sequence tells.
//   - A batch delivered late (delivered and not received, redelivered after the ack wait behind
//     newer sets that raised W): not listed, so inserted, once; skipped, it would be lost.
//
// A message is delivered to one writer: writer i of n (Config.Index, Config.Count) reads the
// partitions p with p % n == i through its own consumer (natsjs.WriterConsumerConfig), and
// writes only while it holds the lease of its index (natsjs.AcquireWriterLease), so two
// processes never both decide about the same row. Writer 0 also reads messages of the form
// before partitions (events.<tenant>), whose rows may be of any partition: their sequences are
// below every partitioned message's, so where another writer has raised W[p, m] meanwhile,
// Stored decides for them, as for a late batch. Rows the dedup step (below) drops are not
// inserted: when it drops all of a batch's rows of (p, m), no commit lists s, and a redelivery
// finds them not stored and drops them again.
//
// The same event can also reach the stream twice in different batches (a client, or an SDK that
// re-batches, retries after a lost answer): the stream drops only a repeated batch. The writer
// inserts each event — a tenant and an event id — at most once within the dedup window
// (Config.DedupWindow, at least 24 h): before inserting a set it drops repeats within the set
// (the first in stream order stays), then every event already stored. Asking the store about
// every event would cost a look-up per row, so an in-memory filter of the keys stored within
// the window (package dedup: two rotating Bloom filters, memory fixed by Config.DedupCapacity)
// rules out almost all of them: only the keys it may hold are looked up (Sink.Seen, on the shard
// of the event's partition), and only those the store confirms are dropped — a false positive of
// the filter costs a look-up, never an event. A copy has the same tenant and subject, so the same
// partition and shard as the original; a resend that changes the user or anonymous id is
// another partition and outside this guarantee. The keys of each insert go into the filter once
// the insert is known to be stored; a starting writer, after Settle, rebuilds the filter from
// the keys stored on every shard within the window (Sink.RecentIDs), so a restart or a new
// writer forgets nothing. About hourly the writer lets every shard drop keys older than the
// window (Sink.DropIDsBefore). Past the window a copy is inserted again.
//
// Suppressed subjects (WithSuppression). A data subject's erasure suppresses the subject first
// (ingest then drops its new events), but events accepted before that may still be in the
// stream. Before the watermark and dedup steps the writer drops every row whose user id or
// anonymous id is suppressed for its tenant (privacy.View: the PRIVACY bucket, loaded before Run
// and followed by a watch); a dropped row is not inserted, and its message is acknowledged with
// the rest of the set. The argument above holds as for the dedup step: a commit lists only the
// sequences of inserted rows, so when every row of a batch's (p, m) is dropped no commit lists
// s, and a redelivery finds them not stored and asks the view again; when only some are
// dropped, the commit lists s and a redelivery skips the batch, the dropped rows included. A
// suppression only grows while its erasure runs, so a redelivered row is dropped again. An
// UNSUPPRESS could let a row of before the suppression land afterwards, redelivered or still
// queued behind a stopped writer; an erasure therefore completes only once the stream is
// drained through the sequence it read when its suppression was in force (StreamSeq, Drained).
// After that no row accepted before the suppression is left to land: an UNSUPPRESS lets in only
// events accepted after it, which is what it asks for. Rows already stored are the erasure's to
// delete, not the writer's.
//
// The argument needs exactly this of each shard of the store, which is the Sink interface:
//   - Insert is atomic: after it returns — with or without an error, or when its writer dies —
//     either all of its rows and commits are stored or none. An error does not mean none: the
//     answer may have been lost while the insert landed.
//   - Settle waits until no insert begun earlier (by this writer or by a predecessor that died
//     in the middle of one) can still land, then returns the watermarks. Read any earlier, they
//     could miss a landing insert, whose rows would then be inserted again. The writer settles
//     every shard at start, and a shard before it asks Stored and after a failed insert.
//   - Stored tells which sequences the stored commits of a partition and month list.
//   - SeqOffset (asked of the first shard) gives each incarnation of the stream (told apart by
//     its creation time) a fixed offset added to its sequences: the highest watermark of any
//     shard when first seen. A recreated stream restarts at 1; without the offset its batches
//     would sit below the watermarks and be taken for stored ones.
//   - Seen tells which of some event keys are stored on the shard, RecentIDs lists the keys
//     stored there within a window, both as of the last Settle; DropIDsBefore forgets the keys
//     of events received before a time. Keys are stored by the same atomic Insert as their rows.
//
// Four more rules of the writer keep batches from being lost or delayed:
//   - The consumer is recreated at start so that batches a crashed writer left unacknowledged
//     come first, not after the ack wait behind newer ones.
//   - Nothing is acknowledged before its insert returned success, or before Settle showed it
//     stored; a writer that stops in between leaves its messages to be redelivered.
//   - Messages collected before a fetch error are written, never dropped, and a waiting fetch
//     is ended by the server (FetchMaxWait), not by a client-side deadline that could drop a
//     message the server had just sent.
//   - While an insert is retried, its messages are kept in progress, so the stream does not
//     redeliver them behind the writer's back.
//
// Write fences. A subject's erasure (services/analytics, Eraser) rebuilds the rollup hours its
// events were in from the raw events of those hours less the subject's: it deletes those hours'
// rollup rows and inserts them again with INSERT … SELECT from events_local. A row of those hours
// inserted by a writer after the delete and before the SELECT read it would be counted twice —
// once by the materialized view, once by the rebuild — so no insert of the tenant may land between
// the delete and the end of the rebuild. The erasure raises a fence on the tenant
// (natsjs.FenceBucket, fence.<tenant>) and waits until every writer whose lease is live has
// acknowledged it (ack.<tenant>.w<index>). A writer acknowledges a fence between two writes, when
// none of its inserts is in flight (an insert being retried is in flight: the write has not
// returned), and from then on leaves every message of a fenced tenant — one message holds one
// tenant's events, its subject names the tenant — out of its sets: not inserted, not acknowledged,
// delivered again after a second (NakWithDelay). Its acknowledgement thus says that no insert of
// the tenant's events by this writer runs or will run until the fence is lifted; the erasure also
// waits until no writer insert running on the shard at that point (a dead writer's, whose lease
// lapsed) still runs, as Settle does. A starting writer loads the fences before it consumes. After
// the rebuild the erasure lifts the fence, and the deferred messages come again. Their sequences
// may now be below the watermark that newer sets raised; no commit lists them, so Stored finds
// them not stored and they are inserted once, as any late batch: the exactly-once argument above
// holds unchanged, a deferred message being one more way for a batch to come late. A fence never
// blocks a tenant for good: the erasure lifts it on every way out, refreshes it while it holds it,
// and a writer ignores a fence not refreshed for natsjs.FenceMaxAge, logging an error.
//
// A message that cannot be decoded is a poison message: it goes to the dead-letter stream with
// its reason and the subject it came on (which names its tenant, for an erasure's clean-up:
// services/analytics/deadletters) and is acknowledged, so it never blocks the pipeline. So is a batch holding an event
// whose tenant is not the one its subject (events.<tenant>.<p>, or events.<tenant> before
// partitions) names, or, on a partition's subject, an event of another partition: only ingest
// may publish there (NATS permissions), and it publishes each tenant's events of a partition on
// that subject, so a mismatch is forged or broken and is never stored. While the store is down the
// writer retries with backoff and keeps its messages in progress; the backlog stays in the
// stream and drains on recovery. Run returns an error only when writing cannot go on (the
// stream or the writer's consumer is deleted under it): a restarted writer starts over.
//
// Fault injection (a crash between an insert and its acks) is a Sink wrapper in package
// writerfault, installed only by tests and the chaos build of cmd/analytics.
package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/usage"
	"github.com/campaignmesh/campaignmesh/services/analytics/dedup"
)

// errLeaseLost stops a writer whose lease lapsed or was taken (natsjs.WriterLease.Held).
var errLeaseLost = errors.New("writer lease lost: another process writes as this index, or NATS did not answer its refresh in time")

// ConsumerName is the durable consumer of writer 0 (of writer index i:
// natsjs.WriterConsumerName(i)).
var ConsumerName = natsjs.WriterConsumerName(0)

// Row is one accepted event with its stream partition (natsjs.Partition of its tenant and
// subject, computed by the writer from the event) and the sequence it is stored under: the
// stream sequence of its batch plus the offset of the stream's incarnation (Sink.SeqOffset).
type Row struct {
	Event *ingestv1.AcceptedEvent
	Part  int
	Seq   uint64
}

// Commit is what one insert stores of a stream partition: the distinct sequences of its rows,
// ascending. The store keeps it with the rows (a commit row), in the same block.
type Commit struct {
	Part int
	Seqs []uint64
}

// PartMonth is a stream partition and a month (UTC, YYYYMM): the unit a watermark is kept for.
type PartMonth struct {
	Part  int
	Month uint32
}

// MonthOf is the month (YYYYMM, UTC) an event of corrected time t is stored in: ClickHouse's
// toYYYYMM(event_date), the partition of events_local.
func MonthOf(t time.Time) uint32 {
	t = t.UTC()
	return uint32(t.Year()*100 + int(t.Month()))
}

// PartOf is the stream partition of e: natsjs.Partition of its tenant and subject (the user
// id, or the anonymous id when there is none).
func PartOf(e *ingestv1.AcceptedEvent) int {
	subject := e.GetEvent().GetUserId()
	if subject == "" {
		subject = e.GetEvent().GetAnonymousId()
	}
	return natsjs.Partition(e.GetTenantId(), subject)
}

func monthOf(r Row) uint32 { return MonthOf(r.Event.GetCorrectedTime().AsTime()) }

// Sink is one shard of the store the writer fills, reduced to what the exactly-once argument of
// the package doc needs from it. services/analytics/clickhouse.EventSink is the production one.
type Sink interface {
	// Insert stores rows, all of month, and commits (one per stream partition of rows: its
	// sequences in rows) — all of them or none, even when it fails or its process dies midway.
	// An error does not mean none were stored (the answer may have been lost while the insert
	// landed): Settle and Stored tell.
	Insert(ctx context.Context, month uint32, rows []Row, commits []Commit) error
	// Settle waits until no Insert into this store begun earlier, by this writer or by one
	// that died, can still land, then returns the watermarks of parts (all when parts is nil):
	// per partition and month, the highest sequence of a commit stored (absent when none is).
	Settle(ctx context.Context, parts []int) (map[PartMonth]uint64, error)
	// Stored returns those of seqs that a stored commit of pm lists; call it after Settle.
	Stored(ctx context.Context, pm PartMonth, seqs []uint64) ([]uint64, error)
	// SeqOffset returns the offset added to the sequences of the stream incarnation created at
	// streamCreated (Unix nanoseconds). An incarnation not seen before gets watermark (the
	// highest sequence stored on any shard), recorded durably, so the same incarnation always
	// gets the same offset; call it after Settle, with no Insert running. The writer asks the
	// first shard.
	SeqOffset(ctx context.Context, streamCreated, watermark uint64) (uint64, error)
	// Seen returns those of keys whose events are stored on this shard, among the events
	// received since the last DropIDsBefore; call it after Settle. The writer asks only about
	// keys its filter may hold: copies of stored events and the filter's false positives.
	Seen(ctx context.Context, keys []EventKey) ([]EventKey, error)
	// RecentIDs calls fn with the key of every event stored on this shard received at or after
	// since (and maybe of some received before); call it after Settle. A starting writer
	// rebuilds its filter with it.
	RecentIDs(ctx context.Context, since time.Time, fn func(EventKey)) error
	// DropIDsBefore lets the store forget the keys of events received before before: Seen and
	// RecentIDs may miss them afterwards. The rows stay.
	DropIDsBefore(ctx context.Context, before time.Time) error
}

// EventKey names an event: a tenant's event id. The writer stores each at most once within its
// dedup window.
type EventKey struct {
	Tenant, EventID string
}

func keyOf(r Row) EventKey {
	return EventKey{Tenant: r.Event.GetTenantId(), EventID: r.Event.GetEvent().GetEventId()}
}

// Config bounds a write — a set is inserted when it holds BatchRows rows or MaxWait has passed —
// and sizes the dedup filter.
type Config struct {
	BatchRows int
	MaxWait   time.Duration
	// DedupWindow is how long after an event was stored another copy of it (the same tenant
	// and event id) is still dropped; zero means DefaultConfig's. A copy comes later only when
	// a client resends it that late.
	DedupWindow time.Duration
	// DedupCapacity is the number of events per window the in-memory filter is sized for; zero
	// means DefaultConfig's. Its memory is fixed by it: about 2.5 bytes per event (two filters
	// at 1 % false positives). More events than that only raise the share of events looked up
	// in the store.
	DedupCapacity int
	// Index and Count place this writer among Count writers (zero Count means one): it owns
	// the stream partitions p with p % Count == Index (natsjs.WriterPartitions), read through
	// its own consumer, and holds the lease of its index (natsjs.AcquireWriterLease) while it
	// writes, so two processes never write as the same index.
	Index, Count int
	// Identity names this process in its lease: a process restarted with the same identity
	// takes its lease back at once, another waits until the lease lapses (30 s). Empty means
	// the host name.
	Identity string
}

// DefaultConfig is 10,000 rows or 1 s, and a 48 h dedup window sized for 50 million events
// (about 290 events/s on average; 126 MB).
var DefaultConfig = Config{BatchRows: 10000, MaxWait: time.Second, DedupWindow: 48 * time.Hour, DedupCapacity: 50_000_000}

// dedupFalsePositives is the filter's false-positive rate at capacity: the share of new events
// looked up in the store.
const dedupFalsePositives = 0.01

// pruneEvery is how often the writer lets the store drop the keys older than the dedup window.
const pruneEvery = time.Hour

// Option changes how a Writer runs.
type Option func(*Writer)

// WithClock makes the writer read the time from now for its dedup window (the filter's
// rotation, the keys rebuilt at start, the keys dropped hourly): tests move it by hours.
func WithClock(now func() time.Time) Option {
	return func(w *Writer) { w.now = now }
}

// Writer is the JetStream → Sink writer.
type Writer struct {
	js     jetstream.JetStream
	sinks  []Sink // index = shard: a row of partition p goes to sinks[p % len(sinks)]
	cfg    Config
	logger *slog.Logger

	// watermarks are the highest sequences stored per partition and month, on every shard.
	watermarks map[PartMonth]uint64

	// lease is this writer's right to write as its index, held while Run runs.
	lease *natsjs.WriterLease

	// seqOffset is added to the stream's sequences (see Sink.SeqOffset).
	seqOffset uint64

	// filter holds the keys stored within the dedup window (see the package doc); pruned is
	// when the store last dropped older keys. now is the dedup window's clock.
	filter *dedup.Filter
	pruned time.Time
	now    func() time.Time

	// suppression, when set (WithSuppression), drops the rows of suppressed subjects, counted
	// by suppressed.
	suppression *suppression
	suppressed  prometheus.Counter

	inserted, dead, duplicates, lookups prometheus.Counter
	latency                             prometheus.Histogram
	backlog, lag, filterKeys            prometheus.Gauge

	// fences are the tenant write fences this writer honours (fence.go); fenceDeferred counts
	// the messages it deferred for them.
	fences        *fenceState
	fenceDeferred prometheus.Counter

	// acceptedUsage, when set (WithAcceptedUsage), records the accepted events on USAGE.
	acceptedUsage bool
}

// New returns a writer into sinks, one per ClickHouse shard (index = shard); its metrics are
// registered with reg. A zero DedupWindow or DedupCapacity of cfg takes DefaultConfig's.
func New(js jetstream.JetStream, sinks []Sink, cfg Config, logger *slog.Logger, reg prometheus.Registerer, opts ...Option) *Writer {
	if cfg.DedupWindow == 0 {
		cfg.DedupWindow = DefaultConfig.DedupWindow
	}
	if cfg.DedupCapacity == 0 {
		cfg.DedupCapacity = DefaultConfig.DedupCapacity
	}
	if cfg.Count == 0 {
		cfg.Count = 1
	}
	if cfg.Identity == "" {
		cfg.Identity, _ = os.Hostname()
	}
	w := &Writer{js: js, sinks: sinks, cfg: cfg, logger: logger, now: time.Now,
		inserted:   prometheus.NewCounter(prometheus.CounterOpts{Name: "writer_inserted_rows_total", Help: "Event rows inserted into ClickHouse."}),
		dead:       prometheus.NewCounter(prometheus.CounterOpts{Name: "writer_dead_letters_total", Help: "Messages sent to the dead-letter stream."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "writer_duplicate_events_total", Help: "Events not inserted because the same tenant and event id is stored already (or comes earlier in the same insert)."}),
		lookups:    prometheus.NewCounter(prometheus.CounterOpts{Name: "writer_dedup_lookups_total", Help: "Events the dedup filter could not rule out as new, looked up in ClickHouse."}),
		latency:    prometheus.NewHistogram(prometheus.HistogramOpts{Name: "writer_insert_seconds", Help: "ClickHouse insert latency.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		backlog:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "writer_backlog_messages", Help: "Batches in the stream not yet written."}),
		lag:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "writer_lag_seconds", Help: "Time from ingest's reception of the newest inserted event to its insert."}),
		filterKeys: prometheus.NewGauge(prometheus.GaugeOpts{Name: "writer_dedup_filter_keys", Help: "Event keys in the dedup filter (two windows at most); above -dedup-capacity more new events are looked up in ClickHouse."}),
		suppressed: newSuppressedCounter(),
	}
	w.fenceDeferred = prometheus.NewCounter(prometheus.CounterOpts{Name: "writer_fence_deferred_messages_total", Help: "Messages of tenants under an erasure's write fence, left unacknowledged to be delivered again after it."})
	for _, o := range opts {
		o(w)
	}
	if reg != nil {
		reg.MustRegister(w.inserted, w.dead, w.duplicates, w.lookups, w.suppressed, w.latency, w.backlog, w.lag, w.filterKeys)
		reg.MustRegister(w.fenceDeferred)
	}
	return w
}

// Run writes until ctx ends, then returns nil. Store and NATS outages are retried, not
// returned; Run returns an error only when writing cannot go on: the configuration bounds no
// set, or the stream or the writer's consumer was deleted under it (a new writer waits for the
// stream and starts over, with the offset of the new incarnation).
func (w *Writer) Run(ctx context.Context) error {
	err := w.run(ctx)
	if ctx.Err() != nil {
		return nil // stopped: unacknowledged messages are redelivered to the next run
	}
	return err
}

func (w *Writer) run(ctx context.Context) error {
	if w.cfg.BatchRows < 1 || w.cfg.MaxWait <= 0 {
		return fmt.Errorf("writer: batch rows (%d) and max wait (%s) must be positive", w.cfg.BatchRows, w.cfg.MaxWait)
	}
	filter, err := dedup.New(dedup.Config{Window: w.cfg.DedupWindow, Capacity: uint64(max(w.cfg.DedupCapacity, 0)),
		FalsePositiveRate: dedupFalsePositives, Now: w.now})
	if err != nil {
		return fmt.Errorf("writer: %w", err)
	}
	if len(w.sinks) == 0 {
		return errors.New("writer: no sink")
	}
	if natsjs.WriterPartitions(w.cfg.Index, w.cfg.Count) == nil {
		return fmt.Errorf("writer: index %d of %d writers: the index must be below the count, the count 1 to %d", w.cfg.Index, w.cfg.Count, natsjs.MaxWriters)
	}
	// The lease first: only then may this process settle and write as its index.
	if err := w.retry(ctx, nil, "take the writer lease", func() error {
		var err error
		w.lease, err = natsjs.AcquireWriterLease(ctx, w.js, w.cfg.Index, w.cfg.Identity)
		return err
	}); err != nil {
		return err
	}
	defer w.lease.Close()
	if err := w.retry(ctx, nil, "read the watermarks", func() error { return w.settle(ctx, nil) }); err != nil {
		return err
	}
	// After Settle no insert of a predecessor can still land: the keys read now are all stored.
	if err := w.retry(ctx, nil, "rebuild the dedup filter", func() error {
		start := time.Now()
		n := 0
		for _, sink := range w.sinks {
			if err := sink.RecentIDs(ctx, w.now().Add(-w.cfg.DedupWindow), func(k EventKey) {
				filter.Add(k.Tenant, k.EventID)
				n++
			}); err != nil {
				return err // a partial rebuild is retried into the same filter: keys added twice cost nothing
			}
		}
		w.logger.Info("dedup filter rebuilt", "keys", n, "capacity", w.cfg.DedupCapacity, "bytes", filter.Bytes(),
			"window", w.cfg.DedupWindow.String(), "took", time.Since(start).String())
		if n > w.cfg.DedupCapacity {
			w.logger.Warn("more events stored within the dedup window than the filter is sized for; raise -dedup-capacity", "keys", n, "capacity", w.cfg.DedupCapacity)
		}
		return nil
	}); err != nil {
		return err
	}
	w.filter = filter
	w.filterKeys.Set(float64(filter.Keys()))
	// The fences before the first message: one raised before this writer started holds too.
	if err := w.openFences(ctx); err != nil {
		return err
	}
	cons, err := w.consumer(ctx)
	if err != nil {
		return err
	}
	// Stored sequences are offset per stream incarnation: a recreated stream restarts at 1.
	if err := w.retry(ctx, nil, "read the stream epoch", func() error {
		stream, err := w.js.Stream(ctx, natsjs.StreamName)
		if err != nil {
			return err
		}
		w.seqOffset, err = w.sinks[0].SeqOffset(ctx, uint64(stream.CachedInfo().Created.UnixNano()), w.highest())
		return err
	}); err != nil {
		return err
	}
	w.logger.Info("writer started", "watermark", w.highest(), "seq_offset", w.seqOffset, "shards", len(w.sinks))
	for ctx.Err() == nil {
		if !w.lease.Held() {
			return fmt.Errorf("writer %d: %w", w.cfg.Index, errLeaseLost)
		}
		w.ackFences(ctx) // between writes: none of this writer's inserts is in flight
		msgs, rows, fetchErr := w.collect(ctx, cons)
		msgs, rows = w.deferFenced(msgs, rows)
		// What was collected before a fetch error is written all the same: dropped, it would
		// come again after the ack wait, below the watermark of newer sets, and be skipped.
		if len(msgs) > 0 && ctx.Err() == nil {
			if err := w.write(ctx, msgs, rows); err != nil {
				return err
			}
		}
		w.prune(ctx)
		// A fetch from a deleted consumer may fail otherwise (no responders) or only time out:
		// the consumer's info tells it is gone, whatever the fetch said.
		if err := w.updateBacklog(ctx, cons); gone(err) && !gone(fetchErr) {
			fetchErr = err
		}
		if fetchErr != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if gone(fetchErr) {
				return fmt.Errorf("stream %s, consumer %s: gone while writing (deleted?): %w", natsjs.StreamName, natsjs.WriterConsumerName(w.cfg.Index), fetchErr)
			}
			w.logger.Warn("fetch from stream; retrying", "err", fetchErr)
			sleep(ctx, time.Second)
		}
	}
	return ctx.Err()
}

// consumer (re)creates the writer's durable consumer over its partitions
// (natsjs.WriterConsumerConfig), after deleting the consumers that would overlap it (the single
// writer's from before partitions, those of a larger writer count). Start over: the consumer is
// recreated so that it delivers, in stream order, every batch of its partitions still in the
// stream — the work-queue stream (ingest's; wait for it) keeps exactly the batches not yet
// acknowledged. Batches a crashed writer left unacknowledged thus come again first, instead of
// after the ack wait behind newer ones; those already stored are acknowledged unwritten. While
// a writer of the older count still holds an overlapping consumer, the server refuses this one
// and it is retried.
func (w *Writer) consumer(ctx context.Context) (jetstream.Consumer, error) {
	var cons jetstream.Consumer
	name := natsjs.WriterConsumerName(w.cfg.Index)
	err := w.retry(ctx, nil, "create the writer's consumer", func() error {
		if err := natsjs.RemoveStaleWriterConsumers(ctx, w.js, w.cfg.Index, w.cfg.Count); err != nil {
			return err
		}
		if err := w.js.DeleteConsumer(ctx, natsjs.StreamName, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return err
		}
		var err error
		cons, err = w.js.CreateOrUpdateConsumer(ctx, natsjs.StreamName, natsjs.WriterConsumerConfig(w.cfg.Index, w.cfg.Count))
		return err
	})
	return cons, err
}

// shard is the index in w.sinks of partition part's shard.
func (w *Writer) shard(part int) int { return part % len(w.sinks) }

// settle settles the shards of parts (all shards when parts is nil) and takes their watermarks.
func (w *Writer) settle(ctx context.Context, parts []int) error {
	if w.watermarks == nil {
		w.watermarks = map[PartMonth]uint64{}
	}
	for i, sink := range w.sinks {
		var mine []int
		for _, p := range parts {
			if w.shard(p) == i {
				mine = append(mine, p)
			}
		}
		if parts != nil && mine == nil {
			continue
		}
		got, err := sink.Settle(ctx, mine)
		if err != nil {
			return fmt.Errorf("shard %d: %w", i, err)
		}
		for pm, seq := range got {
			w.watermarks[pm] = max(w.watermarks[pm], seq)
		}
	}
	return nil
}

// highest is the highest sequence stored, on any shard.
func (w *Writer) highest() uint64 {
	var top uint64
	for _, seq := range w.watermarks {
		top = max(top, seq)
	}
	return top
}

// Block is the rows of a set for one shard and month, with their commits: one Sink.Insert.
type Block struct {
	Shard   int
	Month   uint32
	Rows    []Row
	Commits []Commit
}

// Blocks splits rows into one block per shard (of shards; partition p is on shard p % shards)
// and month, ordered by shard and month, each with its commits: per partition, the distinct
// sequences of its rows. Rows keep their order within a block.
func Blocks(rows []Row, shards int) []Block {
	type key struct {
		shard int
		month uint32
	}
	index := map[key]int{}
	var out []Block
	for _, r := range rows {
		k := key{r.Part % shards, monthOf(r)}
		i, ok := index[k]
		if !ok {
			i = len(out)
			index[k] = i
			out = append(out, Block{Shard: k.shard, Month: k.month})
		}
		out[i].Rows = append(out[i].Rows, r)
	}
	for i := range out {
		seqs := map[int][]uint64{}
		for _, r := range out[i].Rows {
			seqs[r.Part] = append(seqs[r.Part], r.Seq)
		}
		for p, s := range seqs {
			slices.Sort(s)
			out[i].Commits = append(out[i].Commits, Commit{Part: p, Seqs: slices.Compact(s)})
		}
		slices.SortFunc(out[i].Commits, func(a, b Commit) int { return a.Part - b.Part })
	}
	slices.SortFunc(out, func(a, b Block) int {
		if a.Shard != b.Shard {
			return a.Shard - b.Shard
		}
		return int(a.Month) - int(b.Month)
	})
	return out
}

// write inserts the rows of msgs not yet stored — those above the watermark of their partition
// and month, and any at or below it that the sink does not have, less the events stored already
// — one block per shard and month, then acknowledges msgs. It returns an error only when ctx
// ends, before acknowledging anything.
func (w *Writer) write(ctx context.Context, msgs []fetched, rows []Row) error {
	if w.acceptedUsage {
		units := AcceptedUnits(rows, w.now())
		if err := w.retry(ctx, msgs, "record accepted events", func() error { return usage.PublishAll(ctx, w.js, units) }); err != nil {
			return err // unacked messages are redelivered, and their units published again
		}
	}
	rows = w.withoutSuppressed(rows)
	todo, err := w.unstoredBatches(ctx, msgs, rows)
	if err != nil {
		return err
	}
	todo, err = w.unstored(ctx, msgs, todo)
	if err != nil {
		return err
	}
	for _, b := range Blocks(todo, len(w.sinks)) {
		if err := w.insertBlock(ctx, msgs, b); err != nil {
			return err // unacked messages are redelivered to the next run
		}
	}
	for _, m := range msgs {
		if err := m.msg.Ack(); err != nil {
			w.logger.Warn("ack batch (it will be redelivered and skipped)", "err", err)
		}
	}
	return nil
}

// insertBlock inserts b, retrying until it is stored, and then raises the watermarks and adds
// its keys to the filter. It returns an error only when ctx ends.
func (w *Writer) insertBlock(ctx context.Context, msgs []fetched, b Block) error {
	sink := w.sinks[b.Shard]
	failed := false
	if err := w.retry(ctx, msgs, "insert into clickhouse", func() error {
		// An insert retried through a long outage must not land once the lease has lapsed:
		// another process may own these partitions by then and settle without waiting for it.
		if !w.lease.Held() {
			return errLeaseLost
		}
		// After a failed attempt the insert may still have landed (the answer was lost):
		// inserting again would count the block twice, so look first.
		if failed {
			if landed, err := w.landed(ctx, b); err != nil {
				return err
			} else if landed {
				w.logger.Info("insert had landed although its answer was lost", "rows", len(b.Rows), "shard", b.Shard, "month", b.Month)
				return nil
			}
		}
		err := w.insert(ctx, msgs, sink, b)
		failed = err != nil
		return err
	}); err != nil {
		return err
	}
	for _, c := range b.Commits {
		pm := PartMonth{Part: c.Part, Month: b.Month}
		w.watermarks[pm] = max(w.watermarks[pm], c.Seqs[len(c.Seqs)-1])
	}
	for _, r := range b.Rows {
		w.filter.Add(r.Event.GetTenantId(), r.Event.GetEvent().GetEventId())
	}
	w.filterKeys.Set(float64(w.filter.Keys()))
	return nil
}

// updateBacklog sets the backlog gauge. Its error also tells when the consumer is gone while
// the fetches only time out.
func (w *Writer) updateBacklog(ctx context.Context, cons jetstream.Consumer) error {
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	w.backlog.Set(float64(info.NumPending + uint64(info.NumAckPending)))
	return nil
}

// gone tells whether err means the stream or the writer's consumer no longer exists, which no
// retry on this consumer can mend.
func gone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, jetstream.ErrStreamNotFound)
}

type fetched struct {
	msg jetstream.Msg
	seq uint64
	ctx trace.SpanContext
}

// maxFetchWait bounds one waiting fetch, and so how long a stop waits for it.
const maxFetchWait = time.Second

// collect gathers messages until BatchRows rows or MaxWait, decoding each; poison messages go
// to the dead-letter stream. A set may hold more than BatchRows rows, from the messages of its
// last fetch. With an error it also returns what it collected before.
func (w *Writer) collect(ctx context.Context, cons jetstream.Consumer) ([]fetched, []Row, error) {
	deadline := time.Now().Add(w.cfg.MaxWait)
	var msgs []fetched
	var rows []Row
	for len(rows) < w.cfg.BatchRows && ctx.Err() == nil {
		if time.Until(deadline) < 10*time.Millisecond {
			break
		}
		// Take what the stream holds without waiting for a fetch to fill up (a fetch waits for
		// its count of messages), so that a set goes as soon as it holds BatchRows rows; only
		// when the stream holds nothing, wait for the next message until the deadline.
		batch, err := cons.FetchNoWait(200)
		if err != nil {
			return msgs, rows, err
		}
		n, err := w.take(ctx, batch, &msgs, &rows)
		if err != nil {
			return msgs, rows, err
		}
		if n > 0 {
			continue
		}
		// The server ends the wait (FetchMaxWait, not a context that could end first on this
		// side and drop a message the server had sent: it would come again only after the ack
		// wait). A stop thus waits for the fetch, at most maxFetchWait.
		wait := min(time.Until(deadline), maxFetchWait)
		if wait < 10*time.Millisecond {
			break
		}
		if batch, err = cons.Fetch(1, jetstream.FetchMaxWait(wait)); err != nil {
			return msgs, rows, err
		}
		if _, err := w.take(ctx, batch, &msgs, &rows); err != nil {
			return msgs, rows, err
		}
	}
	return msgs, rows, ctx.Err()
}

// take decodes the messages of batch into msgs and rows, dead-lettering poison messages, and
// returns how many messages it saw.
func (w *Writer) take(ctx context.Context, batch jetstream.MessageBatch, msgs *[]fetched, rows *[]Row) (int, error) {
	n := 0
	for m := range batch.Messages() {
		n++
		meta, err := m.Metadata()
		if err != nil {
			w.deadLetter(ctx, m, "no metadata: "+err.Error())
			continue
		}
		// Both forms decode: compact batches and those an older ingest left in the stream.
		b, err := natsjs.DecodeBatch(m.Data())
		if err != nil || len(b.GetEvents()) == 0 {
			w.deadLetter(ctx, m, fmt.Sprintf("undecodable batch: %v", err))
			continue
		}
		parts, reason := partitions(m.Subject(), b)
		if reason != "" {
			w.deadLetter(ctx, m, reason)
			continue
		}
		sc := trace.SpanContextFromContext(otel.GetTextMapPropagator().Extract(ctx, propagation.HeaderCarrier(http.Header(m.Headers()))))
		*msgs = append(*msgs, fetched{msg: m, seq: meta.Sequence.Stream, ctx: sc})
		for i, e := range b.GetEvents() {
			*rows = append(*rows, Row{Event: e, Part: parts[i], Seq: w.seqOffset + meta.Sequence.Stream})
		}
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		return n, err
	}
	return n, nil
}

// partitions returns the stream partition of every event of batch b (natsjs.Partition of its
// tenant and subject), or why b may not be stored from subject: an event whose tenant is not
// the one the subject (events.<tenant>.<p>, or events.<tenant> before partitions) names, or
// whose partition is not the subject's p.
func partitions(subject string, b *ingestv1.AcceptedBatch) ([]int, string) {
	tenant, part, ok := natsjs.ParseSubject(subject)
	if !ok {
		return nil, fmt.Sprintf("tenant mismatch: subject %q names no tenant", subject)
	}
	parts := make([]int, len(b.GetEvents()))
	for i, e := range b.GetEvents() {
		if e.GetTenantId() != tenant {
			return nil, fmt.Sprintf("tenant mismatch: event %d has tenant %q on subject %q", i, e.GetTenantId(), subject)
		}
		parts[i] = PartOf(e)
		if part >= 0 && parts[i] != part {
			return nil, fmt.Sprintf("partition mismatch: event %d is of partition %d on subject %q", i, parts[i], subject)
		}
	}
	return parts, ""
}

// unstored returns block (the late rows, then those above the watermark) less the events stored
// already: every repeat of an event (tenant and event id) after its first row, and every event
// the sink confirms stored. Only the events the filter may hold are asked about, so a false
// positive of the filter is asked about and kept. It returns an error only when ctx ends.
func (w *Writer) unstored(ctx context.Context, msgs []fetched, block []Row) ([]Row, error) {
	first := make(map[EventKey]struct{}, len(block))
	out := make([]Row, 0, len(block))
	maybe := map[int][]EventKey{} // by shard: a key is stored on its partition's shard
	asked := 0
	for _, r := range block {
		k := keyOf(r)
		if _, again := first[k]; again {
			continue
		}
		first[k] = struct{}{}
		out = append(out, r)
		if w.filter.MayContain(k.Tenant, k.EventID) {
			maybe[w.shard(r.Part)] = append(maybe[w.shard(r.Part)], k)
			asked++
		}
	}
	if asked > 0 {
		w.lookups.Add(float64(asked))
		var stored []EventKey
		if err := w.retry(ctx, msgs, "look up events that may be stored already", func() error {
			stored = stored[:0]
			for shard, keys := range maybe {
				found, err := w.sinks[shard].Seen(ctx, keys)
				if err != nil {
					return fmt.Errorf("shard %d: %w", shard, err)
				}
				stored = append(stored, found...)
			}
			return nil
		}); err != nil {
			return nil, err
		}
		if len(stored) > 0 {
			drop := make(map[EventKey]struct{}, len(stored))
			for _, k := range stored {
				drop[k] = struct{}{}
			}
			out = slices.DeleteFunc(out, func(r Row) bool {
				_, ok := drop[keyOf(r)]
				return ok
			})
		}
	}
	if n := len(block) - len(out); n > 0 {
		w.duplicates.Add(float64(n))
		w.logger.Debug("events stored already are not inserted again", "events", n)
	}
	return out, nil
}

// prune lets the store drop the event keys older than the dedup window, about every pruneEvery.
// A failure is logged and tried again at the next turn, an hour later: meanwhile the store only
// keeps more keys.
func (w *Writer) prune(ctx context.Context) {
	now := w.now()
	if now.Sub(w.pruned) < pruneEvery || ctx.Err() != nil {
		return
	}
	w.pruned = now
	for i, sink := range w.sinks {
		if err := sink.DropIDsBefore(ctx, now.Add(-w.cfg.DedupWindow)); err != nil && ctx.Err() == nil {
			w.logger.Warn("drop event keys older than the dedup window; trying again in an hour", "shard", i, "err", err)
		}
	}
}

// unstoredBatches returns, in stream order, the rows whose batches are not stored yet for their
// partition and month: those above its watermark (an insert holding them would have raised it),
// and those at or below it that no stored commit lists. In stream order there are none of the
// latter, but a batch can come late: delivered to this writer and not received (a fetch that
// ended as the server sent it, a broken connection), it is redelivered after the ack wait,
// behind newer sets that raised the watermark. Skipped as stored, it would be lost; asked about,
// it is inserted once.
func (w *Writer) unstoredBatches(ctx context.Context, msgs []fetched, rows []Row) ([]Row, error) {
	below := w.below(rows)
	if len(below) == 0 {
		return rows, nil
	}
	var parts []int
	for pm := range below {
		if !slices.Contains(parts, pm.Part) {
			parts = append(parts, pm.Part)
		}
	}
	var stored map[PartMonth][]uint64
	if err := w.retry(ctx, msgs, "look up batches delivered below the watermark", func() error {
		if err := w.settle(ctx, parts); err != nil {
			return err
		}
		// Settle may have raised a watermark (an insert that had not ended): ask about every
		// row at or below the watermarks now held.
		stored = map[PartMonth][]uint64{}
		for pm, seqs := range w.below(rows) {
			have, err := w.sinks[w.shard(pm.Part)].Stored(ctx, pm, seqs)
			if err != nil {
				return err
			}
			stored[pm] = have
		}
		return nil
	}); err != nil {
		return nil, err
	}
	out := make([]Row, 0, len(rows))
	late := 0
	for _, r := range rows {
		pm := PartMonth{Part: r.Part, Month: monthOf(r)}
		if r.Seq <= w.watermarks[pm] {
			if slices.Contains(stored[pm], r.Seq) {
				continue
			}
			late++
		}
		out = append(out, r)
	}
	if late > 0 {
		w.logger.Warn("batches delivered below the watermark were not stored; inserting them", "rows", late)
	}
	return out, nil
}

// below returns the distinct sequences of rows at or below the watermark of their partition and
// month.
func (w *Writer) below(rows []Row) map[PartMonth][]uint64 {
	out := map[PartMonth][]uint64{}
	for _, r := range rows {
		pm := PartMonth{Part: r.Part, Month: monthOf(r)}
		if r.Seq <= w.watermarks[pm] && !slices.Contains(out[pm], r.Seq) {
			out[pm] = append(out[pm], r.Seq)
		}
	}
	return out
}

// landed tells whether block b, whose insert failed, was stored all the same: the insert is
// atomic, so its first commit, looked up once no insert runs, tells.
func (w *Writer) landed(ctx context.Context, b Block) (bool, error) {
	c := b.Commits[0]
	if err := w.settle(ctx, []int{c.Part}); err != nil {
		return false, err
	}
	have, err := w.sinks[b.Shard].Stored(ctx, PartMonth{Part: c.Part, Month: b.Month}, c.Seqs[len(c.Seqs)-1:])
	return len(have) > 0, err
}

func (w *Writer) insert(ctx context.Context, msgs []fetched, sink Sink, b Block) error {
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
	if err := sink.Insert(ctx, b.Month, b.Rows, b.Commits); err != nil {
		span.RecordError(err)
		return err
	}
	w.latency.Observe(time.Since(start).Seconds())
	w.inserted.Add(float64(len(b.Rows)))
	newest := b.Rows[len(b.Rows)-1].Event.GetReceivedAt().AsTime()
	w.lag.Set(time.Since(newest).Seconds())
	return nil
}

// retry runs f until it succeeds, backing off up to 10 s and keeping msgs in progress so the
// stream does not redeliver them meanwhile. It returns an error only when ctx ends or the
// lease is lost (errLeaseLost: retrying would write as an index another process may hold).
func (w *Writer) retry(ctx context.Context, msgs []fetched, what string, f func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := f()
		if err == nil || errors.Is(err, errLeaseLost) {
			return err
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
	// The subject names the tenant even when the data does not decode: an erasure of one of
	// its subjects finds the message by it (services/analytics/deadletters).
	msg.Header.Set("Cm-Subject", m.Subject())
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
