package dsr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/services/dsr/receipt"
)

// Defaults of the runner.
const (
	// DefaultWorkers: a worker waits for a participant's answer (analytics gathers the calls of
	// many requests into one look-up or one erasure batch), so many requests must be in flight
	// at once for a burst of requests to be batched well.
	DefaultWorkers = 256
	DefaultLease   = 2 * time.Minute
	// DefaultPollInterval is how often an idle runner looks for due requests (a new request
	// wakes it at once) and how often it polls a running erasure.
	DefaultPollInterval = time.Second
	MinBackoff          = time.Second
	MaxBackoff          = time.Minute
	// MaxChunkBytes bounds an export chunk (one record larger than it gets a chunk of its own).
	MaxChunkBytes = 1 << 20
	// ReconcileInterval is how often every suppression and policy is published again.
	ReconcileInterval = time.Hour
	// PurgeInterval is how often expired exports and identifiers are purged.
	PurgeInterval = 10 * time.Minute
	// StatsInterval is how often the open-request gauges are refreshed.
	StatsInterval = 15 * time.Second
	callTimeout   = 30 * time.Second
	exportTimeout = 30 * time.Minute
)

// Metrics receives the runner's figures.
type Metrics interface {
	Stats(s OpenStats, now time.Time)
}

// Runner carries requests through their steps: a pool of workers, each performing one step of
// one claimed request at a time, so many requests progress at once (participants see their
// calls close together and can batch them, as analytics does with erasures).
type Runner struct {
	store        Store
	hasher       *privacy.Hasher
	pub          Publisher
	participants map[string]Participant
	keys         *Keyring
	now          func() time.Time
	logger       *slog.Logger
	metrics      Metrics
	workers      int
	lease, poll  time.Duration
	id           string // in claims: see WithRunnerID
	wake         chan struct{}
}

// RunnerOption configures a Runner.
type RunnerOption func(*Runner)

// WithWorkers sets how many requests are worked on at once.
func WithWorkers(n int) RunnerOption { return func(r *Runner) { r.workers = n } }

// WithRunnerID names the runner in its claims (default "runner"): a runner started again under
// the same identity — the same process restarted, even after a kill -9 — takes back the
// requests its previous incarnation claimed at once instead of after their lease. Two live
// runners must not share one.
func WithRunnerID(id string) RunnerOption { return func(r *Runner) { r.id = id } }

// WithLease sets how long a claimed request stays with its runner before another may take it
// (after a crash).
func WithLease(d time.Duration) RunnerOption { return func(r *Runner) { r.lease = d } }

// WithPollInterval sets the idle poll and erasure poll interval.
func WithPollInterval(d time.Duration) RunnerOption { return func(r *Runner) { r.poll = d } }

// WithRunnerClock sets the clock (tests).
func WithRunnerClock(now func() time.Time) RunnerOption { return func(r *Runner) { r.now = now } }

// WithRunnerLogger sets the logger.
func WithRunnerLogger(l *slog.Logger) RunnerOption { return func(r *Runner) { r.logger = l } }

// WithMetrics sets where figures go.
func WithMetrics(m Metrics) RunnerOption { return func(r *Runner) { r.metrics = m } }

// NewRunner returns a runner over store calling participants.
func NewRunner(store Store, hasher *privacy.Hasher, pub Publisher, participants []Participant, keys *Keyring, opts ...RunnerOption) *Runner {
	r := &Runner{store: store, hasher: hasher, pub: pub, participants: map[string]Participant{}, keys: keys, now: time.Now,
		logger: slog.New(slog.DiscardHandler), workers: DefaultWorkers, lease: DefaultLease, poll: DefaultPollInterval,
		id: "runner", wake: make(chan struct{}, 1)}
	for _, p := range participants {
		r.participants[p.Name()] = p
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Wake makes the runner look for due requests now.
func (r *Runner) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run works on due requests until ctx ends; the requests in progress are then released (due at
// once for the next runner).
func (r *Runner) Run(ctx context.Context) error {
	if n, err := r.store.ReleaseClaims(ctx, r.id, r.now()); err != nil {
		r.logger.Warn("take back the claims of this runner's previous start; they wait out their lease", "runner", r.id, "error", err)
	} else if n > 0 {
		r.logger.Info("took back the requests this runner held before it stopped", "runner", r.id, "requests", n)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	done := make(chan struct{}, r.workers)
	inflight := 0
	tick := time.NewTicker(r.poll)
	defer tick.Stop()
	for {
		for {
			free := r.workers - inflight
			if free <= 0 {
				break
			}
			claimed, err := r.store.ClaimDue(ctx, r.id, r.now(), r.lease, free)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				r.logger.Warn("claim due requests", "error", err)
				break
			}
			for _, req := range claimed {
				inflight++
				wg.Add(1)
				go func() {
					defer wg.Done()
					r.step(ctx, req)
					done <- struct{}{}
				}()
			}
			if len(claimed) < free {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-done:
			inflight--
		case <-r.wake:
		case <-tick.C:
		}
	}
}

// RunOnce performs one step of every request due now (up to the worker count) and returns how
// many it stepped: a runner that lives for one round (tests stop and restart runners between
// steps with it).
func (r *Runner) RunOnce(ctx context.Context) (int, error) {
	claimed, err := r.store.ClaimDue(ctx, r.id, r.now(), r.lease, r.workers)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	for _, req := range claimed {
		wg.Add(1)
		go func() { defer wg.Done(); r.step(ctx, req) }()
	}
	wg.Wait()
	return len(claimed), nil
}

// step performs one step of req and stores its outcome; when the runner stops meanwhile, the
// request is released instead (a cancelled call is not the participant's failure).
func (r *Runner) step(ctx context.Context, req Request) {
	err := r.advance(ctx, req)
	if ctx.Err() != nil || err != nil {
		if err != nil && ctx.Err() == nil && !errors.Is(err, ErrStale) {
			r.logger.Warn("dsr request step", "request", req.ID, "state", req.State, "error", err)
		}
		if ctx.Err() != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = r.store.Release(rctx, req.ID, r.now())
		}
	}
}

// hashes returns the hashes of the covered identifiers (linked ones included or not).
func hashes(cs []Covered, linked bool) []string {
	var out []string
	for _, c := range cs {
		if (linked || !c.Linked) && !slices.Contains(out, c.Hash) {
			out = append(out, c.Hash)
		}
	}
	return out
}

func identifiers(cs []Covered) []Identifier {
	out := make([]Identifier, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Identifier)
	}
	return out
}

// publishAll puts every covered hash of req into the bucket.
func (r *Runner) publishAll(ctx context.Context, req Request) error {
	for _, h := range hashes(req.Covered, true) {
		if err := r.pub.PutSuppression(ctx, req.TenantID, h, req.ID); err != nil {
			return err
		}
	}
	return nil
}

// moveTo sets the request's next state with every participant pending again.
func moveTo(req *Request, s State, now time.Time) {
	req.State, req.UpdateTime, req.NextAttempt = s, now, now
	for i := range req.Participants {
		p := &req.Participants[i]
		p.State, p.LastError, p.NextAttempt, p.Failures, p.UpdateTime = PPending, "", nil, 0, now
	}
}

func (r *Runner) advance(ctx context.Context, req Request) error {
	now := r.now().UTC()
	from := req.State
	pr := Progress{Expect: from}
	switch from {
	case Received:
		moveTo(&req, Suppressing, now)
	case Suppressing:
		switch req.Kind {
		case KindAccess, KindErasure:
			added, err := r.resolve(ctx, &req, now)
			if err != nil {
				return err
			}
			if req.Kind == KindErasure {
				pr.AddSuppressions = added
			}
		case KindSuppress:
			if err := r.publishAll(ctx, req); err != nil {
				return r.retryLater(ctx, req, now, err)
			}
			moveTo(&req, Running, now)
		default:
			moveTo(&req, Running, now)
		}
	case Running:
		switch req.Kind {
		case KindAccess:
			r.eachParticipant(ctx, &req, now, r.export)
		case KindErasure:
			if err := r.publishAll(ctx, req); err != nil {
				r.logger.Warn("publish suppressions; the reconcile loop publishes them", "request", req.ID, "error", err)
			}
			r.eachParticipant(ctx, &req, now, r.erase)
		case KindUnsuppress:
			pr.RemoveSuppressions = hashes(req.Covered, true)
			moveTo(&req, Verifying, now)
		default:
			moveTo(&req, Verifying, now)
		}
		if req.State == Running && allDone(req) {
			moveTo(&req, Verifying, now)
		}
	case Verifying:
		switch req.Kind {
		case KindErasure:
			r.eachParticipant(ctx, &req, now, r.verify)
		case KindUnsuppress:
			gone, err := r.store.Unheld(ctx, req.TenantID, hashes(req.Covered, true))
			if err != nil {
				return err
			}
			for _, h := range gone {
				if err := r.pub.DeleteSuppression(ctx, req.TenantID, h); err != nil {
					return r.retryLater(ctx, req, now, err)
				}
			}
		default: // an export has nothing to verify: every participant finished it
			for i := range req.Participants {
				req.Participants[i].State = PDone
			}
		}
		if req.State == Verifying && allDone(req) {
			if err := r.complete(&req, now); err != nil {
				return err
			}
		}
	default:
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if req.State == from && req.State.Open() {
		req.NextAttempt = nextAttempt(req, now, r.poll)
	}
	pr.Request = req
	if err := r.store.SaveProgress(ctx, pr); err != nil {
		return err
	}
	if from == Suppressing && req.State == Running && req.Kind == KindErasure {
		if err := r.publishAll(ctx, req); err != nil {
			r.logger.Warn("publish suppressions; the next step publishes them again", "request", req.ID, "error", err)
		}
	}
	return nil
}

// retryLater stores that the request waits for the bucket (NATS) with a short delay.
func (r *Runner) retryLater(ctx context.Context, req Request, now time.Time, cause error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r.logger.Warn("privacy bucket unavailable; retrying", "request", req.ID, "error", cause)
	req.NextAttempt = now.Add(5 * r.poll)
	return r.store.SaveProgress(ctx, Progress{Request: req, Expect: req.State})
}

func allDone(req Request) bool {
	for _, p := range req.Participants {
		if p.State != PDone {
			return false
		}
	}
	return true
}

// nextAttempt is when an unchanged request is due again: the earliest participant retry, or
// one poll interval for participants still running.
func nextAttempt(req Request, now time.Time, poll time.Duration) time.Time {
	next := now.Add(MaxBackoff)
	for _, p := range req.Participants {
		switch {
		case p.State == PDone || p.State == PFailed:
		case p.NextAttempt != nil:
			next = minTime(next, *p.NextAttempt)
		default:
			next = minTime(next, now.Add(poll))
		}
	}
	return next
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// participantFunc performs a participant's part of the current step: done when it finished.
type participantFunc func(ctx context.Context, req *Request, p Participant, st *ParticipantStatus, now time.Time) (done bool, err error)

// eachParticipant runs fn for every participant that is not done and is due, recording
// success, retry with backoff, or permanent failure (which fails the request).
func (r *Runner) eachParticipant(ctx context.Context, req *Request, now time.Time, fn participantFunc) {
	for i := range req.Participants {
		st := &req.Participants[i]
		if st.State == PDone || st.State == PFailed || st.NextAttempt != nil && st.NextAttempt.After(now) {
			continue
		}
		p, ok := r.participants[st.Name]
		if !ok {
			r.record(req, st, now, &CallError{Code: "UNAVAILABLE", Err: errors.New("participant not configured")})
			continue
		}
		st.Attempts++
		done, err := fn(ctx, req, p, st, now)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if r.record(req, st, now, err) {
				return
			}
			continue
		}
		st.Failures, st.LastError, st.UpdateTime = 0, "", now
		if done {
			st.State, st.NextAttempt = PDone, nil
		} else {
			next := now.Add(r.poll)
			st.State, st.NextAttempt = PRunning, &next
		}
	}
}

// record notes a failed participant call: a permanent refusal fails the request (true);
// anything else is retried with backoff (1 s doubling to 60 s). last_error holds only the
// status code's name and a fixed phrase, never the participant's message.
func (r *Runner) record(req *Request, st *ParticipantStatus, now time.Time, err error) bool {
	code := callCode(err)
	st.UpdateTime = now
	var ce *CallError
	if errors.As(err, &ce) && ce.Permanent() {
		st.State, st.NextAttempt = PFailed, nil
		st.LastError = code + ": the participant refused the request"
		req.State, req.EndTime, req.UpdateTime = Failed, &now, now
		req.FailureReason = fmt.Sprintf("participant %s refused the request (%s)", st.Name, code)
		return true
	}
	st.Failures++
	backoff := MinBackoff << min(st.Failures-1, 6)
	if backoff > MaxBackoff {
		backoff = MaxBackoff
	}
	next := now.Add(backoff)
	st.State, st.NextAttempt = PRetrying, &next
	st.LastError = code + ": the participant call failed; retrying with backoff"
	r.logger.Warn("participant call failed; retrying", "request", req.ID, "participant", st.Name, "code", code, "attempts", st.Attempts)
	return false
}

// resolve asks every participant not yet done for identifiers linked to the named ones, two
// hops, keeping at most MaxCovered identifiers in all; it returns the hashes it added. When
// every participant is done the request moves to running.
func (r *Runner) resolve(ctx context.Context, req *Request, now time.Time) ([]string, error) {
	var added []string
	named := identifiers(slices.DeleteFunc(slices.Clone(req.Covered), func(c Covered) bool { return c.Linked }))
	hasher := func(v string) string { return r.hashOf(req, v) }
	r.eachParticipant(ctx, req, now, func(ctx context.Context, req *Request, p Participant, _ *ParticipantStatus, _ time.Time) (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		hop1, err := p.Resolve(cctx, req.TenantID, req.ID, named)
		if err != nil {
			return false, err
		}
		known := append(slices.Clone(named), hop1...)
		var hop2 []Identifier
		if len(hop1) > 0 && len(known) <= MaxCovered {
			if hop2, err = p.Resolve(cctx, req.TenantID, req.ID, known); err != nil {
				return false, err
			}
		}
		for _, id := range append(hop1, hop2...) {
			if len(req.Covered) >= MaxCovered {
				break
			}
			if id.Value == "" || slices.ContainsFunc(req.Covered, func(c Covered) bool { return c.Identifier == id }) {
				continue
			}
			h := hasher(id.Value)
			req.Covered = append(req.Covered, Covered{Identifier: id, Hash: h, Linked: true, LinkedBy: p.Name()})
			if !slices.Contains(added, h) {
				added = append(added, h)
			}
		}
		return true, nil
	})
	if req.State == Suppressing && allDone(*req) {
		moveTo(req, Running, now)
	}
	return added, nil
}

// hashOf is the subject hash of a value of the request's tenant: the hash of a covered
// identifier with that value when there is one (no hasher needed), else computed.
func (r *Runner) hashOf(req *Request, value string) string {
	for _, c := range req.Covered {
		if c.Value == value {
			return c.Hash
		}
	}
	return r.hasher.SubjectHash(req.TenantID, value)
}

// export writes a participant's export into chunks of at most MaxChunkBytes; a failed stream
// leaves no chunk of the participant behind, so a retry (or a runner after a crash) starts
// from nothing.
func (r *Runner) export(ctx context.Context, req *Request, p Participant, st *ParticipantStatus, _ time.Time) (bool, error) {
	if err := r.store.DeleteExportChunks(ctx, req.ID, p.Name()); err != nil {
		return false, err
	}
	var (
		buf     []byte
		seq     int
		records int
		bytes   int64
		counts  = map[string]int64{}
	)
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		err := r.store.AppendExportChunk(ctx, req.ID, Chunk{Participant: p.Name(), Seq: seq, Records: records, Data: buf})
		seq, records, buf = seq+1, 0, buf[:0]
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, exportTimeout)
	defer cancel()
	err := p.Export(sctx, req.TenantID, req.ID, identifiers(req.Covered), func(typ string, data []byte) error {
		line, err := formatRecord(typ, data)
		if err != nil {
			return err
		}
		if len(buf)+len(line) > MaxChunkBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		buf = append(buf, line...)
		records++
		counts[typ]++
		bytes += int64(len(line))
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		if derr := r.store.DeleteExportChunks(context.WithoutCancel(ctx), req.ID, p.Name()); derr != nil {
			r.logger.Warn("delete a failed export's chunks; the retry deletes them", "request", req.ID, "error", derr)
		}
		return false, err
	}
	st.Counts, st.Bytes = counts, bytes
	return true, nil
}

// erase starts the participant's erasure, or polls it once started (starting it again when
// the participant forgot it).
func (r *Runner) erase(ctx context.Context, req *Request, p Participant, st *ParticipantStatus, _ time.Time) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var (
		es  ErasureStatus
		err error
	)
	if st.Started {
		es, err = p.GetErasure(cctx, req.TenantID, req.ID)
	}
	if !st.Started || callCode(err) == "NOT_FOUND" {
		es, err = p.StartErasure(cctx, req.TenantID, req.ID, identifiers(req.Covered))
	}
	if err != nil {
		return false, err
	}
	st.Started = true
	st.Counts = mergeCounts(st.Counts, es.Counts)
	return es.Done, nil
}

// mergeCounts keeps, per kind of record, the highest count a participant has reported for the
// erasure: a participant that lost its state (restarted) and was started again reports only
// what is left to erase then, not what it erased before.
func mergeCounts(have, reported map[string]int64) map[string]int64 {
	if reported == nil {
		return have
	}
	out := make(map[string]int64, len(have)+len(reported))
	for k, v := range have {
		out[k] = v
	}
	for k, v := range reported {
		if v > out[k] {
			out[k] = v
		} else if _, ok := out[k]; !ok {
			out[k] = v
		}
	}
	return out
}

// verify asks the participant once more: done only with nothing remaining.
func (r *Runner) verify(ctx context.Context, req *Request, p Participant, st *ParticipantStatus, now time.Time) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	es, err := p.GetErasure(cctx, req.TenantID, req.ID)
	if callCode(err) == "NOT_FOUND" {
		es, err = p.StartErasure(cctx, req.TenantID, req.ID, identifiers(req.Covered))
	}
	if err != nil {
		return false, err
	}
	st.Counts = mergeCounts(st.Counts, es.Counts)
	return es.Done && es.Remaining == 0, nil
}

// complete ends the request with its manifest (ACCESS) and signed receipt.
func (r *Runner) complete(req *Request, now time.Time) error {
	req.State, req.EndTime, req.UpdateTime = Completed, &now, now
	doc := receipt.Document{
		Version: receipt.Version, RequestID: req.ID, Tenant: req.TenantID, Kind: string(req.Kind), Regulation: string(req.Regulation),
		SubjectHashes: hashes(req.Covered, false), CoveredHashes: hashes(req.Covered, true),
		CreateTime: receipt.FormatTime(req.CreateTime), CompleteTime: receipt.FormatTime(now), DeadlineTime: receipt.FormatTime(req.Deadline),
	}
	if req.Kind == KindAccess {
		m := &Manifest{Records: map[string]int64{}, ExpireTime: now.Add(ExportRetention)}
		for _, p := range req.Participants {
			var n int64
			for _, c := range p.Counts {
				n += c
			}
			m.Records[p.Name] = n
			m.Bytes += p.Bytes
		}
		req.Export = m
	}
	for _, p := range req.Participants {
		doc.Participants = append(doc.Participants, receipt.Participant{Name: p.Name, Outcome: string(p.State), Counts: p.Counts})
	}
	rc, err := r.keys.Sign(doc)
	if err != nil {
		return err
	}
	req.Receipt = &rc
	return nil
}
