package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// The Sender's exactly-once argument. Neither provider takes an idempotency key, so the
// ledger row is the only guard, and every path keeps "at most one message" and then works
// towards "at least one":
//
//  1. A row is sent only after ClaimPending moved it from pending to sending under this
//     sender's lease (FOR UPDATE SKIP LOCKED: one claimer per row), right before its call.
//  2. The outcome is written per row right after the provider's answer, conditional on the
//     row still being sending under the same owner and attempt. A row is put back to pending
//     only when the answer proves the provider did not act (429, 20429, a connection that
//     failed before the request was written) — or when the provider was never called.
//  3. Every other answer (5xx, a timeout after the request left, an unclassified error)
//     makes the row unknown. So does a crash: a row left sending when its lease expires is
//     moved to unknown, never to pending.
//  4. An unknown row is settled only by the provider's Lookup by our reference: found →
//     sent; not found a settle time after the attempt (longer than the lease, so the attempt
//     is over, and than the provider's indexing delay) → pending. It is never re-sent blind.
//
// A sender that cannot write an outcome (database down, killed) leaves the row sending; step
// 3 then applies. A stale sender whose lease was taken over loses its write in step 2.

// Defaults of SenderConfig.
const (
	DefaultConcurrency = 32
	DefaultLease       = 2 * time.Minute
	DefaultSettle      = 10 * time.Minute
	DefaultRecheck     = 30 * time.Second
	DefaultCheckEvery  = time.Second
	DefaultPoll        = 200 * time.Millisecond
	DefaultMaxAttempts = 25
	// MaxRetryAfter caps how long a provider's Retry-After holds a tenant's sends.
	MaxRetryAfter = time.Minute
	// maxClaim bounds one claim statement.
	maxClaim = 256
)

// SenderConfig configures a Sender.
type SenderConfig struct {
	Store     LedgerStore
	Provider  Provider
	Campaigns CampaignState
	// Compose renders the message of a recipient (content per variant, links, unsubscribe
	// URL). The sender sets Ref, TenantID, CampaignID, Variant and To itself. A compose
	// error is retried with backoff like a not-processed answer (nothing was sent).
	Compose func(ctx context.Context, r Recipient) (Message, error)
	// Owner names this sender in leases: unique per process (a crashed sender's successor
	// must use another, or it could finish rows the dead one claimed).
	Owner string
	// Concurrency bounds a tenant's provider calls in flight (DefaultConcurrency when 0).
	Concurrency int
	// RatePerSecond bounds a tenant's sends per second (0: no limit), burst of one second.
	RatePerSecond float64
	// Lease is how long a claimed row belongs to its sender (DefaultLease when 0). It must
	// exceed the provider client's timeout plus the rate limit's wait.
	Lease time.Duration
	// Settle is how long after an attempt a lookup's "not found" is believed (DefaultSettle
	// when 0; at least Lease): providers index messages with a delay.
	Settle time.Duration
	// Recheck is the time between two lookups of an unknown row (DefaultRecheck when 0).
	Recheck time.Duration
	// CheckEvery is how often the campaign's state is read (DefaultCheckEvery when 0): a
	// paused, cancelled or exhausted campaign stops being claimed within about that time.
	CheckEvery time.Duration
	// Poll is the idle wait between claims when nothing is due (DefaultPoll when 0).
	Poll time.Duration
	// Backoff is the wait before retrying a not-processed attempt (exponential from 1 s,
	// capped at 5 min, with jitter, when nil).
	Backoff func(attempt int) time.Duration
	// MaxAttempts fails a row after that many not-processed attempts (DefaultMaxAttempts).
	MaxAttempts int
	// Metrics receives counts (none when nil).
	Metrics SenderMetrics
	// Quotas holds a tenant's sends at a hard quota of QuotaMeter (no quotas when its View is
	// nil). A message is counted right before its provider call and uncounted when the call
	// provably did not send it, so exactly-once is untouched: the quota only decides whether
	// a claimed row is called or given back uncalled.
	Quotas     Quotas
	QuotaMeter string
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Logger logs stops and store errors, never addresses or content.
	Logger *slog.Logger
}

// SenderMetrics receives the sender's counts (a Prometheus adapter, or Counters).
type SenderMetrics interface {
	// Finished counts an attempt's outcome: sent, failed, pending (a retry) or unknown.
	Finished(tenantID string, state RecipientState)
	// Retried counts a not-processed answer and the backoff chosen.
	Retried(tenantID string, wait time.Duration)
	// Reconciled counts a lookup's conclusion: found (sent) or not (pending again).
	Reconciled(tenantID string, found bool)
	// LeaseLost counts an outcome that could not be written because the row was taken over.
	LeaseLost(tenantID string)
}

// Counters is a SenderMetrics that counts in memory (all tenants together).
type Counters struct {
	Sent, Failed, Retries, Unknown, Found, NotFound, LeasesLost atomic.Int64
	// BackoffNanos sums the backoffs chosen.
	BackoffNanos atomic.Int64
}

var _ SenderMetrics = (*Counters)(nil)

// Finished implements SenderMetrics.
func (c *Counters) Finished(_ string, s RecipientState) {
	switch s {
	case StateSent:
		c.Sent.Add(1)
	case StateFailed:
		c.Failed.Add(1)
	case StateUnknown:
		c.Unknown.Add(1)
	}
}

// Retried implements SenderMetrics.
func (c *Counters) Retried(_ string, wait time.Duration) {
	c.Retries.Add(1)
	c.BackoffNanos.Add(int64(wait))
}

// Reconciled implements SenderMetrics.
func (c *Counters) Reconciled(_ string, found bool) {
	if found {
		c.Found.Add(1)
	} else {
		c.NotFound.Add(1)
	}
}

// LeaseLost implements SenderMetrics.
func (c *Counters) LeaseLost(string) { c.LeasesLost.Add(1) }

type noMetrics struct{}

func (noMetrics) Finished(string, RecipientState) {}
func (noMetrics) Retried(string, time.Duration)   {}
func (noMetrics) Reconciled(string, bool)         {}
func (noMetrics) LeaseLost(string)                {}

// Sender sends campaigns' ledgers through a provider. One Sender serves many campaigns (one
// Run each) and shares each tenant's concurrency and rate limits between them.
type Sender struct {
	cfg SenderConfig

	mu      sync.Mutex
	tenants map[string]*tenantLimits
}

type tenantLimits struct {
	slots chan struct{}
	rate  *rate.Limiter
	// hold is the UnixNano until which the provider asked this tenant to wait (Retry-After).
	hold atomic.Int64
}

// NewSender returns a sender for cfg.
func NewSender(cfg SenderConfig) (*Sender, error) {
	if cfg.Store == nil || cfg.Provider == nil || cfg.Campaigns == nil || cfg.Compose == nil {
		return nil, errors.New("sender: store, provider, campaigns and compose are required")
	}
	if cfg.Owner == "" {
		return nil, errors.New("sender: owner is required")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Settle <= 0 {
		cfg.Settle = DefaultSettle
	}
	if cfg.Settle < cfg.Lease {
		return nil, fmt.Errorf("sender: settle %s is shorter than the lease %s", cfg.Settle, cfg.Lease)
	}
	if cfg.Recheck <= 0 {
		cfg.Recheck = DefaultRecheck
	}
	if cfg.CheckEvery <= 0 {
		cfg.CheckEvery = DefaultCheckEvery
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.Backoff == nil {
		cfg.Backoff = ExponentialBackoff(time.Second, 5*time.Minute)
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Sender{cfg: cfg, tenants: map[string]*tenantLimits{}}, nil
}

// ExponentialBackoff returns first·2^(attempt-1) capped at max, with ±25 % jitter so
// retries of a burst of 429s spread out.
func ExponentialBackoff(first, max time.Duration) func(int) time.Duration {
	return func(attempt int) time.Duration {
		d := first
		for i := 1; i < attempt && d < max; i++ {
			d *= 2
		}
		d = min(d, max)
		return d - d/4 + time.Duration(rand.Int64N(int64(d/2)+1))
	}
}

func (s *Sender) limits(tenantID string) *tenantLimits {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tenants[tenantID]
	if t == nil {
		t = &tenantLimits{slots: make(chan struct{}, s.cfg.Concurrency)}
		if s.cfg.RatePerSecond > 0 {
			t.rate = rate.NewLimiter(rate.Limit(s.cfg.RatePerSecond), max(1, int(s.cfg.RatePerSecond)))
		}
		s.tenants[tenantID] = t
	}
	return t
}

// run is one Run's state shared with its workers.
type run struct {
	tenantID, campaignID string
	limits               *tenantLimits
	stopping             atomic.Bool
	// waits ends when the run stops (or its ctx ends): claimed rows waiting for a token or
	// a provider's Retry-After are then given back at once instead of at the wait's end.
	waits     context.Context
	stopWaits context.CancelFunc
	wake      chan struct{}
}

// Run sends the campaign's ledger until every row is finished (nil), the campaign stops
// being sendable (a *StoppedError: claiming stops at the next state check, calls not yet
// made are given back, calls in flight are finished and recorded), or ctx ends. Ending ctx
// is an abrupt stop, as a crash: calls in flight are abandoned and their rows stay sending
// until their lease expires and they are reconciled. Run again to resume.
func (s *Sender) Run(ctx context.Context, tenantID, campaignID string) error {
	r := &run{tenantID: tenantID, campaignID: campaignID, limits: s.limits(tenantID), wake: make(chan struct{}, 1)}
	r.waits, r.stopWaits = context.WithCancel(ctx)
	defer r.stopWaits()
	var wg sync.WaitGroup
	defer wg.Wait()
	var lastCheck, lastMaintenance time.Time
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := s.cfg.Now()
		if now.Sub(lastCheck) >= s.cfg.CheckEvery {
			st, err := s.cfg.Campaigns.Status(ctx, tenantID, campaignID)
			switch {
			case err != nil:
				// Without the campaign's state, claiming could send a paused campaign: wait.
				s.cfg.Logger.Warn("delivery sender: read campaign state", "campaign_id", campaignID, "error", err)
				if err := s.idle(ctx, r); err != nil {
					return err
				}
				continue
			case !st.Sendable:
				r.stopping.Store(true)
				r.stopWaits()
				wg.Wait()
				return &StoppedError{State: st.State}
			}
			lastCheck = now
		}
		worked := false
		// Expired leases and due lookups at most once a poll interval: they are rare, and
		// checking them between every claim would cost two statements per claim.
		if now.Sub(lastMaintenance) >= s.cfg.Poll {
			lastMaintenance = now
			if _, err := s.cfg.Store.ExpireLeases(ctx, tenantID, campaignID, now); err != nil {
				s.cfg.Logger.Warn("delivery sender: expire leases", "campaign_id", campaignID, "error", err)
			}
			n, err := s.dispatch(ctx, r, &wg, maxClaim, func(limit int) ([]Recipient, error) {
				return s.cfg.Store.ClaimUnknown(ctx, tenantID, campaignID, now, s.cfg.Recheck, limit)
			}, s.reconcile)
			if err != nil {
				s.cfg.Logger.Warn("delivery sender: claim unknown rows", "campaign_id", campaignID, "error", err)
			}
			worked = n > 0
		}
		if until := r.limits.hold.Load(); until <= now.UnixNano() && s.cfg.Quotas.held(tenantID, s.cfg.QuotaMeter, now) == nil {
			n, err := s.dispatch(ctx, r, &wg, s.claimable(r, now), func(limit int) ([]Recipient, error) {
				return s.cfg.Store.ClaimPending(ctx, Claim{TenantID: tenantID, CampaignID: campaignID, Owner: s.cfg.Owner, Limit: limit, Now: now, Lease: s.cfg.Lease})
			}, s.attempt)
			if err != nil {
				s.cfg.Logger.Warn("delivery sender: claim rows", "campaign_id", campaignID, "error", err)
			}
			worked = worked || n > 0
		}
		if worked {
			continue
		}
		if len(r.limits.slots) == 0 {
			if open, err := s.cfg.Store.Unfinished(ctx, tenantID, campaignID, false); err == nil && !open {
				return nil
			}
		}
		if err := s.idle(ctx, r); err != nil {
			return err
		}
	}
}

// Reconcile settles a campaign's rows whose outcome is open — leases expired mid-call and
// unknown rows — through the provider's lookup, without sending anything: for a campaign
// that stopped (cancelled, completed) with such rows, so its sent count becomes exact. It
// returns when no row is sending or unknown, or when ctx ends. Rows found not sent go back
// to pending (a later Run, if the campaign resumes, sends them).
func (s *Sender) Reconcile(ctx context.Context, tenantID, campaignID string) error {
	r := &run{tenantID: tenantID, campaignID: campaignID, limits: s.limits(tenantID), wake: make(chan struct{}, 1)}
	r.waits, r.stopWaits = context.WithCancel(ctx)
	defer r.stopWaits()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		now := s.cfg.Now()
		if _, err := s.cfg.Store.ExpireLeases(ctx, tenantID, campaignID, now); err != nil {
			s.cfg.Logger.Warn("delivery reconcile: expire leases", "campaign_id", campaignID, "error", err)
		}
		n, err := s.dispatch(ctx, r, &wg, maxClaim, func(limit int) ([]Recipient, error) {
			return s.cfg.Store.ClaimUnknown(ctx, tenantID, campaignID, now, s.cfg.Recheck, limit)
		}, s.reconcile)
		if err != nil {
			s.cfg.Logger.Warn("delivery reconcile: claim unknown rows", "campaign_id", campaignID, "error", err)
		}
		if n == 0 && len(r.limits.slots) == 0 {
			if open, err := s.cfg.Store.Unfinished(ctx, tenantID, campaignID, true); err == nil && !open {
				return nil
			}
		}
		if err := s.idle(ctx, r); err != nil {
			return err
		}
	}
}

// claimable is how many rows may be claimed now: with a rate limit, no more than its tokens
// due within half a lease, so claimed rows do not wait for a token until their lease ends.
func (s *Sender) claimable(r *run, now time.Time) int {
	if r.limits.rate == nil {
		return maxClaim
	}
	return int(r.limits.rate.TokensAt(now.Add(s.cfg.Lease / 2)))
}

// idle waits for a worker to finish or the poll interval.
func (s *Sender) idle(ctx context.Context, r *run) error {
	t := time.NewTimer(s.cfg.Poll)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-r.wake:
	case <-t.C:
	}
	return nil
}

// dispatch takes free slots of the tenant (waiting up to the poll interval for one), claims
// as many rows, and starts work on each; it gives back the slots it did not use.
func (s *Sender) dispatch(ctx context.Context, r *run, wg *sync.WaitGroup, limit int, claim func(int) ([]Recipient, error), work func(context.Context, *run, Recipient)) (int, error) {
	slots := r.limits.slots
	taken := 0
	limit = max(1, min(limit, maxClaim))
	t := time.NewTimer(s.cfg.Poll)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		taken++
	case <-t.C:
		return 0, nil
	case <-ctx.Done():
		return 0, nil
	}
	for taken < limit {
		select {
		case slots <- struct{}{}:
			taken++
			continue
		default:
		}
		break
	}
	rows, err := claim(taken)
	for range taken - len(rows) {
		<-slots
	}
	for _, row := range rows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				<-slots
				select {
				case r.wake <- struct{}{}:
				default:
				}
			}()
			work(ctx, r, row)
		}()
	}
	return len(rows), err
}

// attempt makes one claimed row's provider call and records its outcome. The call (and the
// waits before it) must end before the row's lease does, a tenth of the lease early: after
// the lease another sender may reconcile the row, and a call still in flight then could land
// after its lookup said "not found".
func (s *Sender) attempt(ctx context.Context, r *run, row Recipient) {
	out := Outcome{ID: row.ID, Owner: s.cfg.Owner, Attempt: row.Attempt}
	giveBack := func() {
		// Not due again at once: a row given back for lack of time would be claimed again
		// straight away.
		out.State, out.Release, out.NotBefore = StatePending, true, s.cfg.Now().Add(s.cfg.Poll)
		s.record(ctx, r, out)
	}
	deadline := row.LeaseExpiry.Add(-s.cfg.Lease / 10)
	waitCtx, cancelWait := context.WithDeadline(r.waits, deadline)
	defer cancelWait()
	if r.limits.rate != nil {
		if err := r.limits.rate.Wait(waitCtx); err != nil {
			if ctx.Err() == nil {
				giveBack() // stopped, or no token before the lease's end: nothing was sent
			}
			return // ctx ended: the row stays sending and is reconciled after its lease
		}
	}
	if until := time.Unix(0, r.limits.hold.Load()); until.After(s.cfg.Now()) {
		if !until.Before(deadline) {
			giveBack()
			return
		}
		t := time.NewTimer(until.Sub(s.cfg.Now()))
		select {
		case <-waitCtx.Done():
			t.Stop()
			if ctx.Err() == nil {
				giveBack()
			}
			return
		case <-t.C:
		}
	}
	callCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if r.stopping.Load() || !s.cfg.Now().Before(deadline) {
		// Paused, or the lease is too close to its end: give the row back uncalled.
		giveBack()
		return
	}
	// Counted before the call; taken back below only where the provider provably did not act.
	reservation, hard := s.cfg.Quotas.reserve(r.tenantID, s.cfg.QuotaMeter, s.cfg.Now())
	if hard != nil {
		giveBack() // over a hard quota: stays pending until the reset or a plan change
		return
	}
	msg, err := s.cfg.Compose(ctx, row)
	if err == nil {
		msg.Ref, msg.TenantID, msg.CampaignID, msg.Variant, msg.To = row.ID, row.TenantID, row.CampaignID, row.Variant, row.Address
		var id string
		id, err = s.cfg.Provider.Send(callCtx, msg)
		if ctx.Err() != nil {
			return // abrupt stop mid-call: as a crash, the lease expiry settles the row (the reservation stands: it may have been sent)
		}
		if err == nil {
			out.State, out.ProviderID = StateSent, id
			s.record(ctx, r, out)
			return
		}
	} else if skip := (*SkipError)(nil); errors.As(err, &skip) {
		// Nothing was sent and nothing ever will be: the contact is gone, unsubscribed or
		// suppressed since the recipients were resolved.
		out.State, out.Reason = StateSkipped, string(skip.Reason)
		reservation.Release()
		s.record(ctx, r, out)
		return
	} else {
		err = &SendError{Class: NotProcessedRetryable, Reason: "compose the message", Err: err}
	}
	class, se := Classify(err)
	out.Reason = truncate(se.Error(), 500)
	if class == NotProcessedPermanent || class == NotProcessedRetryable {
		reservation.Release() // not sent: the provider did not act (unknown keeps it: it may have)
	}
	switch class {
	case NotProcessedPermanent:
		out.State = StateFailed
	case NotProcessedRetryable:
		if row.Attempt >= s.cfg.MaxAttempts {
			out.State, out.Reason = StateFailed, truncate("retries exhausted: "+out.Reason, 500)
			break
		}
		wait := s.cfg.Backoff(row.Attempt)
		if se.RetryAfter > 0 {
			ra := min(se.RetryAfter, MaxRetryAfter)
			wait = max(wait, ra)
			// The provider asked the whole account to wait, not this row only.
			until := s.cfg.Now().Add(ra).UnixNano()
			for {
				cur := r.limits.hold.Load()
				if cur >= until || r.limits.hold.CompareAndSwap(cur, until) {
					break
				}
			}
		}
		out.State, out.NotBefore = StatePending, s.cfg.Now().Add(wait)
		s.cfg.Metrics.Retried(r.tenantID, wait)
	default:
		out.State = StateUnknown
	}
	s.record(ctx, r, out)
}

func (s *Sender) record(ctx context.Context, r *run, out Outcome) {
	out.Now = s.cfg.Now()
	ok, err := s.cfg.Store.Record(ctx, out)
	switch {
	case err != nil:
		// The row stays sending; after its lease it is reconciled like a crash.
		s.cfg.Logger.Warn("delivery sender: record outcome", "recipient", out.ID, "state", out.State, "error", err)
	case !ok:
		s.cfg.Metrics.LeaseLost(r.tenantID)
		s.cfg.Logger.Warn("delivery sender: lease lost before the outcome was recorded", "recipient", out.ID, "state", out.State)
	case !out.Release:
		s.cfg.Metrics.Finished(r.tenantID, out.State)
	}
}

// reconcile looks one unknown row up at the provider and settles it if it can.
func (s *Sender) reconcile(ctx context.Context, r *run, row Recipient) {
	found, id, err := s.cfg.Provider.Lookup(ctx, LookupRef{Ref: row.ID, To: row.Address, Since: row.AttemptTime})
	if err != nil {
		if ctx.Err() == nil {
			s.cfg.Logger.Warn("delivery sender: look up a message", "recipient", row.ID, "error", err)
		}
		return // looked up again after Recheck
	}
	now := s.cfg.Now()
	res := Resolution{ID: row.ID, Attempt: row.Attempt, Now: now}
	switch {
	case found:
		res.State, res.ProviderID, res.Reason = StateSent, id, "found at the provider after an unclear answer"
	case !row.AttemptTime.IsZero() && now.Sub(row.AttemptTime) >= s.cfg.Settle:
		res.State, res.Reason = StatePending, "not found at the provider after the settle time"
	default:
		return // too early to believe "not found"
	}
	ok, err := s.cfg.Store.Resolve(ctx, res)
	if err != nil {
		s.cfg.Logger.Warn("delivery sender: resolve an unknown row", "recipient", row.ID, "error", err)
		return
	}
	if ok {
		s.cfg.Metrics.Reconciled(r.tenantID, found)
	}
}
