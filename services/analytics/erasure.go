package analytics

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// Fence stops the writers from inserting some tenants' events while an erasure rebuilds their
// rollup hours (services/analytics/writer, "Write fences"; natsjs.Fencer in production).
type Fence interface {
	// Raise raises fence id on tenants and returns once every live writer has acknowledged
	// it: none of their inserts of those tenants runs or will run until Lift.
	Raise(ctx context.Context, id string, tenants []string) error
	// Lift lifts fence id from tenants; safe for fences never raised.
	Lift(ctx context.Context, id string, tenants []string) error
}

// DeadLetters removes a subject's messages from the dead-letter stream (poison batches keep
// the events they held).
type DeadLetters interface {
	// DeleteSubject deletes the dead letters holding events of tenant whose user or anonymous
	// id is one of ids, and returns how many it deleted.
	DeleteSubject(ctx context.Context, tenant string, ids []string) (int64, error)
}

// EventStream is the stream of accepted event batches the writers drain. An erasure waits until
// every batch accepted before it started is written (its subject's events in them dropped by
// the writers, which follow the suppression list), so none of them can land after it is done —
// not even after a later UNSUPPRESS.
type EventStream interface {
	// LastSeq is the sequence of the newest batch accepted so far.
	LastSeq(ctx context.Context) (uint64, error)
	// Drained reports whether every batch at or below seq has been written.
	Drained(ctx context.Context, seq uint64) (bool, error)
}

// ErasureConfig tunes the Eraser.
type ErasureConfig struct {
	// Window is how long the Eraser gathers erasures after the first one arrives before it
	// erases them all together: one deletion mutation per shard for all of them.
	Window time.Duration
	// FenceTimeout bounds the wait for the writers' acknowledgements of a write fence; past
	// it the fence is lifted and the batch tried again later.
	FenceTimeout time.Duration
	// Keep is how long a finished erasure is remembered (GetErasure answers it); after it,
	// GetErasure answers NOT_FOUND and a repeated StartErasure erases again (finding nothing).
	Keep time.Duration
}

// DefaultErasureConfig gathers erasures for 2 s and waits a minute for the writers.
var DefaultErasureConfig = ErasureConfig{Window: 2 * time.Second, FenceTimeout: time.Minute, Keep: 24 * time.Hour}

// ErasureStatus is an erasure's progress.
type ErasureStatus struct {
	// Done is true once the events are deleted and a count on every shard found none left.
	Done bool
	// Counts are what was erased: "events" (raw events), "dead_letters".
	Counts map[string]int64
	// Remaining is the subject's events still stored at the last count.
	Remaining int64
	// Message is the progress in words, without internals.
	Message string
}

// Metric label values of the mutation counter: the table each mutation ran on.
const (
	TableEvents = "events_local"
	TableRollup = "events_hourly_local"
)

// Eraser erases data subjects' events, batched: StartErasure puts a request in an in-memory
// queue and returns; a batcher takes everything queued within Window — across requests and
// tenants — and erases it together:
//
//  1. it counts the subjects' events and collects the rollup hours they are counted in;
//  2. it raises a write fence on the tenants of those hours, waits for every live writer to
//     acknowledge it, deletes those hours' rollup rows and inserts them again from the raw
//     events less the subjects' (so distinct-user states no longer hold them), and lifts the
//     fence — on every way out;
//  3. it counts again: where new events of a subject arrived meanwhile (suppression is
//     applied before an erasure starts, so only in a propagation race) that request goes
//     back to the queue, since its new events are in the rollup;
//  4. it deletes the raw events of the others, one mutation per shard for all of them
//     (ALTER TABLE … DELETE, chunked only when the identifiers exceed the query size), and
//     waits until the mutations are done;
//  5. it counts once more on every shard: a request is done when none of its events is left
//     and its dead letters are deleted; otherwise it goes back to the queue.
//
// The rollup is rebuilt before the raw delete so that a restart at any point leaves the
// subject's raw events to find again (dsr repeats StartErasure after NOT_FOUND): the hours to
// rebuild are found from them. Any failure puts the batch's requests back in the queue with
// backoff; they stay visible as not done with a message.
type Eraser struct {
	store  SubjectStore
	fence  Fence       // nil: no writer writes to the store (tests of the store alone)
	dead   DeadLetters // nil: no dead-letter cleanup
	stream EventStream // nil: no wait for the stream (tests of the store alone)
	cfg    ErasureConfig
	logger *slog.Logger
	now    func() time.Time

	mu    sync.Mutex
	jobs  map[jobKey]*erasureJob
	queue []*erasureJob
	wake  chan struct{}
	batch uint64

	mutations *prometheus.CounterVec
	queued    prometheus.Gauge
	duration  prometheus.Histogram
}

type jobKey struct{ tenant, request string }

type erasureJob struct {
	key    jobKey
	values []string
	// gen grows whenever values grow: a batch that took an older generation does not finish
	// the job.
	gen uint64

	events, deadLetters, remaining int64
	message                        string
	done, queued, running          bool
	attempts                       int
	notBefore                      time.Time
	// streamSeq is the event stream's last sequence when the job was first taken (its
	// subject suppressed by then); streamKnown says it was read.
	streamSeq         uint64
	streamKnown       bool
	started, finished time.Time
}

// NewEraser returns an Eraser over store, fencing the writers through fence and cleaning dead
// letters through dead (nil: none); its metrics are registered with reg. Zero fields of cfg
// take DefaultErasureConfig's. Run runs its batcher.
func NewEraser(store SubjectStore, fence Fence, dead DeadLetters, cfg ErasureConfig, logger *slog.Logger, reg prometheus.Registerer) *Eraser {
	if cfg.Window <= 0 {
		cfg.Window = DefaultErasureConfig.Window
	}
	if cfg.FenceTimeout <= 0 {
		cfg.FenceTimeout = DefaultErasureConfig.FenceTimeout
	}
	if cfg.Keep <= 0 {
		cfg.Keep = DefaultErasureConfig.Keep
	}
	e := &Eraser{store: store, fence: fence, dead: dead, cfg: cfg, logger: logger, now: time.Now,
		jobs: map[jobKey]*erasureJob{}, wake: make(chan struct{}, 1),
		mutations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cm_analytics_erasure_mutations_total",
			Help: "ClickHouse mutations run by subject erasures, by table (events_local: raw events; events_hourly_local: rollup hours rebuilt)."}, []string{"table"}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cm_analytics_erasure_queue_length",
			Help: "Erasure requests waiting for the next batch (new, or tried again after a failure)."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cm_analytics_erasure_duration_seconds",
			Help: "Time from an erasure's first StartErasure to done.", Buckets: prometheus.ExponentialBuckets(0.5, 2, 14)}),
	}
	e.mutations.WithLabelValues(TableEvents)
	e.mutations.WithLabelValues(TableRollup)
	if reg != nil {
		reg.MustRegister(e.mutations, e.queued, e.duration)
	}
	return e
}

// WithEventStream makes erasures wait until the writers have written every batch accepted
// before they started (see EventStream); it returns e.
func (e *Eraser) WithEventStream(s EventStream) *Eraser { e.stream = s; return e }

// Start queues the erasure of values (user and anonymous id values) of tenant for dsr request
// and returns its status at once. A repeated call returns the request's status; one naming
// values the request did not hold yet adds them and erases again.
func (e *Eraser) Start(tenant, request string, values []string) ErasureStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := jobKey{tenant, request}
	j, ok := e.jobs[k]
	if !ok {
		j = &erasureJob{key: k, started: e.now(), message: "queued"}
		e.jobs[k] = j
	}
	added := false
	for _, v := range values {
		if !slices.Contains(j.values, v) {
			j.values = append(j.values, v)
			added = true
		}
	}
	switch {
	case !ok && len(j.values) == 0: // emails only: no event holds one
		j.done, j.finished, j.message = true, e.now(), "done: no event identifiers to erase"
	case added:
		j.gen++
		j.done = false
		j.message = "queued"
		e.enqueue(j, time.Time{})
	}
	return j.status()
}

// Status reports the erasure of tenant's dsr request; NOT_FOUND when this process does not
// know it (never started, forgotten after Keep, or lost in a restart: dsr starts it again).
func (e *Eraser) Status(tenant, request string) (ErasureStatus, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j, ok := e.jobs[jobKey{tenant, request}]
	if !ok {
		return ErasureStatus{}, apperr.NotFoundf("erasure of request %s", request)
	}
	return j.status(), nil
}

func (j *erasureJob) status() ErasureStatus {
	st := ErasureStatus{Done: j.done, Remaining: j.remaining, Message: j.message,
		Counts: map[string]int64{"events": j.events}}
	if j.deadLetters > 0 || j.done {
		st.Counts["dead_letters"] = j.deadLetters
	}
	return st
}

// enqueue puts j in the queue, to be taken from notBefore on (e.mu held). A job in a running
// batch is queued when the batch ends (finish sees its generation changed).
func (e *Eraser) enqueue(j *erasureJob, notBefore time.Time) {
	j.notBefore = notBefore
	if j.queued || j.running {
		return
	}
	j.queued = true
	e.queue = append(e.queue, j)
	e.queued.Set(float64(len(e.queue)))
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run runs the batcher until ctx ends, then returns nil.
func (e *Eraser) Run(ctx context.Context) error {
	for {
		// Wait for a job ready to go.
		for {
			wait, ready := e.untilReady()
			if ready {
				break
			}
			var timer <-chan time.Time
			if wait > 0 {
				timer = time.After(wait)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-e.wake:
			case <-timer:
			}
		}
		// Gather what else arrives within the window: one mutation for all of it.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(e.cfg.Window):
		}
		batch := e.take()
		if len(batch) > 0 {
			e.process(ctx, batch)
		}
		e.forget()
	}
}

// untilReady tells whether a queued job may be taken now, or how long until one may (0: none
// is queued).
func (e *Eraser) untilReady() (time.Duration, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	var wait time.Duration
	for _, j := range e.queue {
		d := j.notBefore.Sub(now)
		if d <= 0 {
			return 0, true
		}
		if wait == 0 || d < wait {
			wait = d
		}
	}
	return wait, false
}

// take removes the ready jobs from the queue and marks them running.
func (e *Eraser) take() []*erasureJob {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	var batch []*erasureJob
	rest := e.queue[:0]
	for _, j := range e.queue {
		if j.notBefore.After(now) {
			rest = append(rest, j)
			continue
		}
		j.queued, j.running = false, true
		j.attempts++
		batch = append(batch, j)
	}
	e.queue = rest
	e.queued.Set(float64(len(e.queue)))
	return batch
}

// forget drops the jobs finished more than Keep ago.
func (e *Eraser) forget() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, j := range e.jobs {
		if j.done && !j.running && e.now().Sub(j.finished) > e.cfg.Keep {
			delete(e.jobs, k)
		}
	}
}

// batchJob is a job as a batch took it: its values and generation then.
type batchJob struct {
	j      *erasureJob
	values []string
	gen    uint64
}

// process erases one batch. Every job ends either done or back in the queue.
func (e *Eraser) process(ctx context.Context, jobs []*erasureJob) {
	e.mu.Lock()
	e.batch++
	id := fmt.Sprintf("erasure-%d-%d", e.now().UnixMilli(), e.batch)
	batch := make([]batchJob, len(jobs))
	for i, j := range jobs {
		batch[i] = batchJob{j: j, values: slices.Clone(j.values), gen: j.gen}
	}
	e.mu.Unlock()
	start := time.Now()
	e.logger.Info("erasure batch started", "batch", id, "requests", len(batch))

	retry := func(bs []batchJob, message string, err error) {
		if err != nil && ctx.Err() == nil {
			e.logger.Warn("erasure batch; its requests are tried again", "batch", id, "requests", len(bs), "step", message, "err", err)
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, b := range bs {
			b.j.running = false
			b.j.message = message + "; trying again"
			backoff := min(time.Second<<min(b.j.attempts-1, 6), time.Minute)
			e.enqueue(b.j, e.now().Add(backoff))
		}
	}
	if batch = e.awaitDrained(ctx, batch); len(batch) == 0 {
		return
	}
	e.setMessage(batch, "counting the subject's events")
	subjects := subjectsOf(batch)
	before, err := e.store.CountSubjectRows(ctx, subjects)
	if err != nil {
		retry(batch, "counting the subject's events", err)
		return
	}
	e.mu.Lock()
	for _, b := range batch {
		b.j.remaining = rowsOf(before, b.j.key.tenant, b.values)
	}
	e.mu.Unlock()
	hours, err := e.store.SubjectHours(ctx, subjects)
	if err != nil {
		retry(batch, "finding the rollup hours to rebuild", err)
		return
	}
	if len(hours) > 0 {
		e.setMessage(batch, "rebuilding the rollup hours without the subject")
		if step, err := e.rebuild(ctx, id, hours, subjects); err != nil {
			retry(batch, step, err)
			return
		}
	}
	after, err := e.store.CountSubjectRows(ctx, subjects)
	if err != nil {
		retry(batch, "counting the subject's events", err)
		return
	}
	// New events of a subject arrived since the first count: they may be in the rollup
	// rebuilt without them. Erase that request again, rollup first.
	var grown, ok []batchJob
	for _, b := range batch {
		if rowsOf(after, b.j.key.tenant, b.values) > rowsOf(before, b.j.key.tenant, b.values) {
			grown = append(grown, b)
		} else {
			ok = append(ok, b)
		}
	}
	if len(grown) > 0 {
		retry(grown, "new events of the subject arrived while erasing", nil)
	}
	if len(ok) == 0 {
		return
	}
	e.setMessage(ok, "deleting the subject's events")
	subjects = subjectsOf(ok)
	var stored int64
	for _, b := range ok {
		stored += rowsOf(after, b.j.key.tenant, b.values)
	}
	// A mutation rewrites whole parts: none for a batch with nothing to delete (a repeated
	// erasure, or subjects never seen).
	if stored > 0 {
		n, err := e.store.DeleteSubjects(ctx, subjects)
		e.mutations.WithLabelValues(TableEvents).Add(float64(n))
		if err != nil {
			retry(ok, "deleting the subject's events", err)
			return
		}
	}
	e.mu.Lock()
	for _, b := range ok {
		b.j.events += rowsOf(after, b.j.key.tenant, b.values)
		b.j.message = "verifying that nothing is left"
	}
	e.mu.Unlock()
	left, err := e.store.CountSubjectRows(ctx, subjects)
	if err != nil {
		retry(ok, "verifying that nothing is left", err)
		return
	}
	var again []batchJob
	for _, b := range ok {
		remaining := rowsOf(left, b.j.key.tenant, b.values)
		e.mu.Lock()
		b.j.remaining = remaining
		e.mu.Unlock()
		if remaining > 0 {
			again = append(again, b)
			continue
		}
		var dead int64
		if e.dead != nil {
			if dead, err = e.dead.DeleteSubject(ctx, b.j.key.tenant, b.values); err != nil {
				again = append(again, b)
				e.logger.Warn("delete the subject's dead letters; trying again", "batch", id, "err", err)
				continue
			}
		}
		e.finish(b, dead)
	}
	if len(again) > 0 {
		retry(again, "events of the subject are left", nil)
	}
	e.logger.Info("erasure batch ended", "batch", id, "requests", len(batch), "done", len(ok)-len(again),
		"again", len(grown)+len(again), "took", time.Since(start).String())
}

// rebuild rebuilds hours without subjects under a write fence on their tenants, lifted on every
// way out. It returns the step that failed.
// awaitDrained returns the jobs of batch whose subject can have no event left in the stream:
// every batch accepted before the job was first taken (the subject was suppressed by then) is
// written. The others go back to the queue for a second, without counting as a failed
// attempt, and show why; a stream that cannot be read sends the whole batch back.
func (e *Eraser) awaitDrained(ctx context.Context, batch []batchJob) []batchJob {
	if e.stream == nil {
		return batch
	}
	var last uint64
	var lastErr error
	read := false
	ready := batch[:0:0]
	var waiting []batchJob
	for _, b := range batch {
		e.mu.Lock()
		known, seq := b.j.streamKnown, b.j.streamSeq
		e.mu.Unlock()
		if !known {
			if !read {
				last, lastErr = e.stream.LastSeq(ctx)
				read = true
			}
			if lastErr != nil {
				waiting = append(waiting, b)
				continue
			}
			seq = last
			e.mu.Lock()
			b.j.streamSeq, b.j.streamKnown = seq, true
			e.mu.Unlock()
		}
		drained, err := e.stream.Drained(ctx, seq)
		if err != nil || !drained {
			if err != nil {
				lastErr = err
			}
			waiting = append(waiting, b)
			continue
		}
		ready = append(ready, b)
	}
	if len(waiting) > 0 {
		if lastErr != nil && ctx.Err() == nil {
			e.logger.Warn("read the event stream's state for an erasure; trying again", "requests", len(waiting), "err", lastErr)
		}
		e.mu.Lock()
		for _, b := range waiting {
			b.j.running = false
			b.j.attempts-- // waiting for the writers is not a failure: no backoff
			b.j.message = "waiting for the writers to write the events accepted before the request"
			e.enqueue(b.j, e.now().Add(time.Second))
		}
		e.mu.Unlock()
	}
	return ready
}

func (e *Eraser) rebuild(ctx context.Context, id string, hours []RollupHour, subjects []Subject) (string, error) {
	var tenants []string
	for _, h := range hours {
		if !slices.Contains(tenants, h.Tenant) {
			tenants = append(tenants, h.Tenant)
		}
	}
	slices.Sort(tenants)
	if e.fence != nil {
		defer func() {
			// Lifted even when ctx has ended: a fence left up holds the tenants' events back
			// until writers take it for stale.
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := e.fence.Lift(lctx, id, tenants); err != nil {
				e.logger.Error("lift a write fence; writers ignore it once it is stale", "batch", id, "err", err)
			}
		}()
		fctx, cancel := context.WithTimeout(ctx, e.cfg.FenceTimeout)
		err := e.fence.Raise(fctx, id, tenants)
		cancel()
		if err != nil {
			return "waiting for the event writers to pause", err
		}
	}
	n, err := e.store.RebuildHours(ctx, hours, subjects)
	e.mutations.WithLabelValues(TableRollup).Add(float64(n))
	if err != nil {
		return "rebuilding the rollup hours", err
	}
	return "", nil
}

// finish marks b done with its dead letters, unless values were added meanwhile: then it goes
// back to the queue.
func (e *Eraser) finish(b batchJob, dead int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j := b.j
	j.running = false
	j.deadLetters += dead
	if j.gen != b.gen {
		j.message = "queued (more identifiers)"
		e.enqueue(j, time.Time{})
		return
	}
	j.done, j.finished, j.remaining = true, e.now(), 0
	j.message = "done: " + strconv.FormatInt(j.events, 10) + " events erased and verified"
	e.duration.Observe(j.finished.Sub(j.started).Seconds())
}

func (e *Eraser) setMessage(batch []batchJob, msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range batch {
		b.j.message = msg
	}
}

// subjectsOf is the distinct subjects of batch.
func subjectsOf(batch []batchJob) []Subject {
	seen := map[Subject]bool{}
	var out []Subject
	for _, b := range batch {
		for _, v := range b.values {
			s := Subject{Tenant: b.j.key.tenant, Value: v}
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return out
}

// rowsOf adds up the rows of tenant whose user or anonymous id is one of values.
func rowsOf(rows []SubjectRows, tenant string, values []string) int64 {
	var n int64
	for _, r := range rows {
		if r.Tenant == tenant && (slices.Contains(values, r.UserID) || slices.Contains(values, r.AnonymousID)) {
			n += r.Rows
		}
	}
	return n
}
