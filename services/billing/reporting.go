package billing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Reporting usage to Stripe, exactly once.
//
// The argument. Usage per (tenant, meter, day) only changes by recomputation, and Stripe
// only ever receives the difference between the usage and what it already acknowledged:
//
//  1. Plan: for each usage row whose value exceeds the acked total `from` and that has no
//     report outstanding, a report of the units (from, to=value] is written to the outbox
//     (meter_reports) with the identifier cm_<tenant>_<meter>_<YYYYMMDD>_<from>_<to>, the
//     customer, the event name and the event time — all fixed before anything is sent. The
//     row's UNIQUE (tenant, meter, day, from) lets only one planner win.
//  2. Send: a sender claims due rows (a lease: next_attempt_at moves past the client's
//     timeout) and posts each one's meter event. Stripe deduplicates on the identifier (for
//     at least 24 hours), and answers a duplicate with a 400 the client turns into an ack.
//  3. Ack: on Stripe's ack the row is acked; its `to` is the new acked total and the next
//     plan starts from it.
//
// A crash between 1 and 2, or during 2 (the event may or may not have reached Stripe), or
// between 2 and 3, leaves the row pending; once its lease ends it is sent again with the same
// identifier and the same content, so Stripe counts it at most once, and the row is acked
// at most once, so the next report never covers the same units. A retryable failure (429,
// 5xx, timeout) leaves it pending with a backoff; a permanent one marks it rejected with
// Stripe's reason, which blocks further reports of that (tenant, meter, day) until an
// operator acts — reconciliation shows it. A report whose event time leaves Stripe's 35-day
// window before it could be sent is marked too_old, never sent.
//
// Gauges (contacts_stored, storage_bytes) are reported as their day's value: Stripe sums a
// meter's events, so their meters bill contact-days and byte-days.

// Report statuses (meter_reports.status).
const (
	ReportPending  = "pending"
	ReportAcked    = "acked"
	ReportRejected = "rejected"
	ReportTooOld   = "too_old"
)

// Stripe's window for a meter event's time (its documented limits).
const (
	StripeMaxEventAge = 35 * 24 * time.Hour
	// reportAgeMargin keeps an hour of the window for retries: a day whose event time is
	// older than StripeMaxEventAge - reportAgeMargin is no longer planned.
	reportAgeMargin = time.Hour
)

// ErrPermanent marks a send failure that the same request would meet again (Stripe refused
// the event: validation, unknown customer, bad key). MeterEventSender implementations wrap
// it; every other error is taken as retryable.
var ErrPermanent = errors.New("refused for good")

// MeterEvent is one meter event as sent to Stripe.
type MeterEvent struct {
	EventName  string
	CustomerID string
	Value      int64
	Identifier string
	Timestamp  time.Time
}

// MeterEventSender sends meter events (the Stripe client). A nil error means Stripe holds
// the event, whether from this request or an earlier one with the same identifier.
type MeterEventSender interface {
	SendMeterEvent(ctx context.Context, e MeterEvent) error
}

// Report is one row of the meter-event outbox.
type Report struct {
	Identifier  string
	TenantID    string
	Meter       Meter
	Day         time.Time
	From, To    int64
	CustomerID  string
	EventName   string
	EventTime   time.Time
	Status      string
	Attempts    int
	LastError   string
	NextAttempt time.Time
}

// ReportCandidate is a usage row that has units not yet reported: its value exceeds the
// acked total and no report of it is outstanding (pending, rejected or too old).
type ReportCandidate struct {
	TenantID   string
	Meter      Meter
	Day        time.Time
	Value      int64
	Reported   int64
	CustomerID string
}

// ReportStore is the reporter's storage (the PostgreSQL store implements it).
type ReportStore interface {
	// ReportCandidates lists the usage rows of days from `since` on with units to report,
	// of tenants with a Stripe customer.
	ReportCandidates(ctx context.Context, since time.Time) ([]ReportCandidate, error)
	// CreateReports writes pending reports, skipping any that conflict with an existing one
	// (another planner's), and returns how many it wrote.
	CreateReports(ctx context.Context, reports []Report) (int, error)
	// ClaimReports takes up to limit pending reports due at now, moving their next attempt
	// to now+lease and counting the attempt.
	ClaimReports(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Report, error)
	// FinishReport sets a report's final status (acked, rejected, too_old) with the reason.
	FinishReport(ctx context.Context, identifier, status, reason string, at time.Time) error
	// RetryReport keeps a report pending, due again at next, with the failure's reason.
	RetryReport(ctx context.Context, identifier, reason string, next time.Time) error
	// PendingReports returns how many reports are pending and the oldest one's creation time.
	PendingReports(ctx context.Context) (n int, oldest time.Time, err error)
}

// ReportMetrics receives the reporter's counts (the prometheus adapter implements it).
type ReportMetrics interface {
	// MeterEventSent counts one send attempt by outcome: acked, retry, rejected, too_old.
	MeterEventSent(meter Meter, outcome string)
	// ReportsPending sets the pending reports and the age of the oldest.
	ReportsPending(n int, oldestAge time.Duration)
}

type noMetrics struct{}

func (noMetrics) MeterEventSent(Meter, string)      {}
func (noMetrics) ReportsPending(int, time.Duration) {}

// ReporterConfig configures a Reporter.
type ReporterConfig struct {
	// EventNamePrefix prefixes a meter's name to make its Stripe event name ("cm_" when
	// empty): cm_events_accepted.
	EventNamePrefix string
	// EventNames overrides the event name of some meters.
	EventNames map[Meter]string
	// Interval is the time between two rounds of planning and sending (30 s when zero).
	Interval time.Duration
	// Lease is how long a claimed report is left to its sender before another attempt; it
	// must exceed the client's request timeout (1 min when zero).
	Lease time.Duration
	// BackoffBase and BackoffMax bound the wait after a retryable failure: base × 2^(attempts-1),
	// at most max (1 s and 5 min when zero).
	BackoffBase, BackoffMax time.Duration
	// Batch is how many reports one claim takes (100 when zero).
	Batch   int
	Now     func() time.Time
	Logger  *slog.Logger
	Metrics ReportMetrics
}

// Reporter plans and sends the meter events. Several may run at once (instances of the
// service): the outbox's constraints and leases keep each event counted once.
type Reporter struct {
	store  ReportStore
	sender MeterEventSender
	cfg    ReporterConfig
}

// NewReporter returns a reporter of the usage in store through sender.
func NewReporter(store ReportStore, sender MeterEventSender, cfg ReporterConfig) *Reporter {
	if cfg.EventNamePrefix == "" {
		cfg.EventNamePrefix = "cm_"
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.Lease <= 0 {
		cfg.Lease = time.Minute
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 5 * time.Minute
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 100
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	return &Reporter{store: store, sender: sender, cfg: cfg}
}

// EventName returns the Stripe event name of a meter.
func (r *Reporter) EventName(m Meter) string {
	if n, ok := r.cfg.EventNames[m]; ok && n != "" {
		return n
	}
	return r.cfg.EventNamePrefix + string(m)
}

// ReportIdentifier is the identifier of the report of units (from, to] of the tenant's
// meter on day: the same units always get the same identifier. It reads
// cm_<tenant>_<meter>_<YYYYMMDD>_<from>_<to>; one longer than Stripe's 100 characters (a long
// tenant id with large values) becomes cm_h_<SHA-256 of that text, hex>, as stable.
func ReportIdentifier(tenant string, m Meter, day time.Time, from, to int64) string {
	id := fmt.Sprintf("cm_%s_%s_%s_%d_%d", tenant, m, day.UTC().Format("20060102"), from, to)
	if len(id) <= maxIdentifierLen {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "cm_h_" + hex.EncodeToString(sum[:])
}

// maxIdentifierLen is Stripe's limit on a meter event's identifier.
const maxIdentifierLen = 100

// EventTime is the time a report of day's units carries: the day's last second, or now for
// today (Stripe refuses times more than 5 minutes ahead).
func EventTime(day, now time.Time) time.Time {
	end := day.UTC().Truncate(24 * time.Hour).Add(24*time.Hour - time.Second)
	if now.Before(end) {
		return now.UTC().Truncate(time.Second)
	}
	return end
}

// OldestReportableDay is the first day whose units may still be planned at now: its event
// time is within Stripe's 35 days, with an hour to spare for retries.
func OldestReportableDay(now time.Time) time.Time {
	limit := now.Add(-StripeMaxEventAge + reportAgeMargin)
	day := limit.UTC().Truncate(24 * time.Hour)
	if EventTime(day, now).Before(limit) {
		day = day.Add(24 * time.Hour)
	}
	return day
}

// Run plans and sends every Interval until ctx ends. Failures are logged and retried on the
// next round; Run returns ctx's error.
func (r *Reporter) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		if err := r.Round(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn("meter-event reporting round", "error", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Round plans the reports of new units, then sends every due report.
func (r *Reporter) Round(ctx context.Context) error {
	if _, err := r.Plan(ctx); err != nil {
		return err
	}
	for {
		n, err := r.SendDue(ctx)
		if err != nil || n == 0 {
			if n, oldest, perr := r.store.PendingReports(ctx); perr == nil {
				age := time.Duration(0)
				if n > 0 {
					age = r.cfg.Now().Sub(oldest)
				}
				r.cfg.Metrics.ReportsPending(n, age)
			}
			return err
		}
	}
}

// Plan writes the reports of the units not yet reported and returns how many it wrote.
func (r *Reporter) Plan(ctx context.Context) (int, error) {
	now := r.cfg.Now()
	cands, err := r.store.ReportCandidates(ctx, OldestReportableDay(now))
	if err != nil {
		return 0, fmt.Errorf("list report candidates: %w", err)
	}
	reports := make([]Report, 0, len(cands))
	for _, c := range cands {
		if c.Value <= c.Reported || c.CustomerID == "" || !c.Meter.Valid() {
			continue
		}
		reports = append(reports, Report{
			Identifier: ReportIdentifier(c.TenantID, c.Meter, c.Day, c.Reported, c.Value),
			TenantID:   c.TenantID, Meter: c.Meter, Day: c.Day, From: c.Reported, To: c.Value,
			CustomerID: c.CustomerID, EventName: r.EventName(c.Meter), EventTime: EventTime(c.Day, now),
			Status: ReportPending,
		})
	}
	if len(reports) == 0 {
		return 0, nil
	}
	n, err := r.store.CreateReports(ctx, reports)
	if err != nil {
		return 0, fmt.Errorf("write reports: %w", err)
	}
	return n, nil
}

// SendDue claims one batch of due reports and sends them; it returns how many it claimed.
func (r *Reporter) SendDue(ctx context.Context) (int, error) {
	claimed, err := r.store.ClaimReports(ctx, r.cfg.Now(), r.cfg.Lease, r.cfg.Batch)
	if err != nil {
		return 0, fmt.Errorf("claim reports: %w", err)
	}
	for _, rep := range claimed {
		if err := ctx.Err(); err != nil {
			return len(claimed), err
		}
		if err := r.send(ctx, rep); err != nil {
			return len(claimed), err
		}
	}
	return len(claimed), nil
}

// send sends one claimed report and records the outcome. Only a store failure is returned:
// Stripe's failures are the report's state.
func (r *Reporter) send(ctx context.Context, rep Report) error {
	now := r.cfg.Now()
	log := r.cfg.Logger.With("identifier", rep.Identifier, "tenant", rep.TenantID, "meter", string(rep.Meter))
	if rep.EventTime.Before(now.Add(-StripeMaxEventAge + time.Minute)) {
		r.cfg.Metrics.MeterEventSent(rep.Meter, ReportTooOld)
		log.Warn("meter event too old for stripe, not sent")
		return r.store.FinishReport(ctx, rep.Identifier, ReportTooOld, "event time more than 35 days ago", now)
	}
	err := r.sender.SendMeterEvent(ctx, MeterEvent{
		EventName: rep.EventName, CustomerID: rep.CustomerID, Value: rep.To - rep.From,
		Identifier: rep.Identifier, Timestamp: rep.EventTime,
	})
	now = r.cfg.Now()
	switch {
	case err == nil:
		r.cfg.Metrics.MeterEventSent(rep.Meter, ReportAcked)
		log.Debug("meter event acked")
		return r.store.FinishReport(ctx, rep.Identifier, ReportAcked, "", now)
	case errors.Is(err, ErrPermanent):
		r.cfg.Metrics.MeterEventSent(rep.Meter, ReportRejected)
		log.Error("meter event rejected by stripe", "error", err)
		return r.store.FinishReport(ctx, rep.Identifier, ReportRejected, err.Error(), now)
	case ctx.Err() != nil:
		// Shutting down: the lease brings the report back to the next sender.
		return ctx.Err()
	default:
		r.cfg.Metrics.MeterEventSent(rep.Meter, "retry")
		wait := r.backoff(rep.Attempts)
		log.Warn("meter event not acked, will retry", "error", err, "attempt", rep.Attempts, "retry_in", wait)
		return r.store.RetryReport(ctx, rep.Identifier, err.Error(), now.Add(wait))
	}
}

// backoff is the wait after the attempts-th failure.
func (r *Reporter) backoff(attempts int) time.Duration {
	d := r.cfg.BackoffBase
	for i := 1; i < attempts && d < r.cfg.BackoffMax; i++ {
		d *= 2
	}
	return min(d, r.cfg.BackoffMax)
}
