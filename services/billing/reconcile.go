package billing

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// Reconciliation explanations: why our usage, the total Stripe acknowledged to the reporter
// and Stripe's own event summaries differ (or "match").
const (
	ExplainMatch                = "match"
	ExplainPending              = "pending"                // units not yet acked (or Stripe's summaries lag behind its acks)
	ExplainTooOld               = "too_old"                // older than Stripe's 35 days when they could have been sent
	ExplainNoCustomer           = "no_customer"            // no Stripe customer mapped: never reported
	ExplainRejected             = "rejected"               // Stripe refused a report for good (reports' last_error)
	ExplainDecreasedAfterReport = "decreased_after_report" // usage went down after a report: Stripe holds more
	ExplainStripeMore           = "stripe_more"            // Stripe holds more than it acknowledged to us
	ExplainStripeLess           = "stripe_less"            // Stripe holds less than it acknowledged to us
)

// MaxReconcileDays bounds one reconciliation's days.
const MaxReconcileDays = 92

// Reconciliation is one tenant's meter on one day.
type Reconciliation struct {
	Day      time.Time
	TenantID string
	Meter    Meter
	Ours     int64
	Reported int64
	// Stripe is nil when Stripe was not asked (no customer).
	Stripe      *int64
	Difference  int64
	Explanation string
}

// ReconcileInput is what the store knows of a tenant's meter on a day.
type ReconcileInput struct {
	Day        time.Time
	TenantID   string
	Meter      Meter
	Ours       int64
	Reported   int64  // acked total
	CustomerID string // "" when none
	Pending    bool   // a report is pending
	Rejected   bool   // a report was rejected
	TooOld     bool   // a report aged out of Stripe's window
}

// ReconcileStore is the reconciliation's storage.
type ReconcileStore interface {
	// ReconcileInputs returns every usage row of the days [start, end] (of tenant, or all
	// when ""), with its reports' state and the tenant's customer.
	ReconcileInputs(ctx context.Context, start, end time.Time, tenant string) ([]ReconcileInput, error)
	// SaveReconciliations stores rows, replacing those of the same day, tenant and meter.
	SaveReconciliations(ctx context.Context, rows []Reconciliation) error
	// ListReconciliations returns stored rows of [start, end] (of tenant, or all) after the
	// key `after` ("" for the first page), at most limit.
	ListReconciliations(ctx context.Context, start, end time.Time, tenant, after string, limit int) ([]Reconciliation, error)
}

// StripeUsage reads what Stripe holds: a customer's daily totals of an event name over
// [start, end) (UTC midnights). A day Stripe has nothing for is absent or 0.
type StripeUsage interface {
	DailyTotals(ctx context.Context, eventName, customer string, start, end time.Time) (map[time.Time]int64, error)
}

// Reconciler reconciles usage with Stripe.
type Reconciler struct {
	store  ReconcileStore
	stripe StripeUsage
	names  func(Meter) string
	now    func() time.Time
	log    *slog.Logger
}

// NewReconciler returns a reconciler; eventName maps a meter to its Stripe event name (the
// reporter's EventName).
func NewReconciler(store ReconcileStore, stripe StripeUsage, eventName func(Meter) string, now func() time.Time, log *slog.Logger) *Reconciler {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{store: store, stripe: stripe, names: eventName, now: now, log: log}
}

// ParseDayRange checks a YYYY-MM-DD range (end "" = start), inclusive, at most maxDays.
func ParseDayRange(start, end string, maxDays int) (time.Time, time.Time, error) {
	var v apperr.Violations
	s, err := time.Parse(time.DateOnly, start)
	if err != nil {
		v.Add("start_day", "must be a day as YYYY-MM-DD")
	}
	e := s
	if end != "" {
		if e, err = time.Parse(time.DateOnly, end); err != nil {
			v.Add("end_day", "must be a day as YYYY-MM-DD")
		}
	}
	if len(v) == 0 {
		if e.Before(s) {
			v.Add("end_day", "must not be before start_day")
		} else if days := int(e.Sub(s)/(24*time.Hour)) + 1; days > maxDays {
			v.Add("end_day", "at most %d days from start_day", maxDays)
		}
	}
	return s, e, v.Err()
}

// Reconcile compares the days [start, end] of tenant (every tenant when "").
func (r *Reconciler) Reconcile(ctx context.Context, start, end time.Time, tenant string) ([]Reconciliation, error) {
	inputs, err := r.store.ReconcileInputs(ctx, start, end, tenant)
	if err != nil {
		return nil, fmt.Errorf("read usage and reports: %w", err)
	}
	type key struct {
		customer string
		meter    Meter
	}
	totals := map[key]map[time.Time]int64{}
	for _, in := range inputs {
		k := key{in.CustomerID, in.Meter}
		if in.CustomerID == "" || totals[k] != nil {
			continue
		}
		t, err := r.stripe.DailyTotals(ctx, r.names(in.Meter), in.CustomerID, start, end.Add(24*time.Hour))
		if err != nil {
			r.log.Warn("stripe event summaries", "meter", string(in.Meter), "error", err)
			return nil, apperr.New(apperr.Unavailable, "STRIPE_UNAVAILABLE", "stripe's event summaries could not be read; try again later")
		}
		if t == nil {
			t = map[time.Time]int64{}
		}
		totals[k] = t
	}
	oldest := OldestReportableDay(r.now())
	out := make([]Reconciliation, 0, len(inputs))
	for _, in := range inputs {
		row := Reconciliation{Day: in.Day, TenantID: in.TenantID, Meter: in.Meter, Ours: in.Ours, Reported: in.Reported}
		if in.CustomerID != "" {
			s := totals[key{in.CustomerID, in.Meter}][in.Day]
			row.Stripe = &s
		}
		row.Explanation = Explain(in, row.Stripe, oldest)
		if row.Stripe != nil {
			row.Difference = row.Ours - *row.Stripe
		} else {
			row.Difference = row.Ours - row.Reported
		}
		out = append(out, row)
	}
	return out, nil
}

// Explain says why a row's numbers differ. The checks run from what Stripe holds to what we
// did: a Stripe total other than our acked total is Stripe's side (or a pending ack); an
// acked total other than our usage is the reporter's side.
func Explain(in ReconcileInput, stripe *int64, oldestReportable time.Time) string {
	switch {
	case in.CustomerID == "" || stripe == nil:
		return ExplainNoCustomer
	case *stripe > in.Reported && in.Pending:
		return ExplainPending // accepted by Stripe, ack not yet recorded
	case *stripe > in.Reported:
		return ExplainStripeMore
	case *stripe < in.Reported:
		return ExplainStripeLess
	case in.Ours == in.Reported:
		return ExplainMatch
	case in.Ours < in.Reported:
		return ExplainDecreasedAfterReport
	case in.Rejected:
		return ExplainRejected
	case in.TooOld || in.Day.Before(oldestReportable):
		return ExplainTooOld
	default:
		return ExplainPending
	}
}

// ReconcileAndStore reconciles day (every tenant) and stores the rows: the daily job.
func (r *Reconciler) ReconcileAndStore(ctx context.Context, day time.Time) (int, error) {
	rows, err := r.Reconcile(ctx, day, day, "")
	if err != nil {
		return 0, err
	}
	if err := r.store.SaveReconciliations(ctx, rows); err != nil {
		return 0, fmt.Errorf("store reconciliations: %w", err)
	}
	return len(rows), nil
}

// RunDaily stores yesterday's reconciliation once a day, shortly after midnight UTC (at
// `after` past it, so late usage recomputations and Stripe's aggregation have settled), and
// at start when yesterday's is missing. It returns when ctx ends.
func (r *Reconciler) RunDaily(ctx context.Context, after time.Duration) error {
	for {
		now := r.now().UTC()
		yesterday := now.Truncate(24*time.Hour).AddDate(0, 0, -1)
		if now.Sub(yesterday.Add(24*time.Hour)) >= after {
			stored, err := r.store.ListReconciliations(ctx, yesterday, yesterday, "", "", 1)
			if err == nil && len(stored) == 0 {
				_, err = r.ReconcileAndStore(ctx, yesterday)
			}
			if err != nil && !errors.Is(err, context.Canceled) {
				r.log.Warn("daily reconciliation", "day", yesterday.Format(time.DateOnly), "error", err)
			}
		}
		// Wake at the next run time, or in an hour to retry a failure.
		next := now.Truncate(24 * time.Hour).Add(24*time.Hour + after)
		wait := min(next.Sub(now), time.Hour)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// ReconciliationPage is one page of stored reconciliations.
type ReconciliationPage struct {
	Rows          []Reconciliation
	NextPageToken string
}

// List returns stored reconciliations of the days start..end (YYYY-MM-DD, end "" = start),
// of tenant (all when ""), pageSize at a time (1-1000, 0 = 100).
func (r *Reconciler) List(ctx context.Context, start, end, tenant string, pageSize int, pageToken string) (ReconciliationPage, error) {
	s, e, err := ParseDayRange(start, end, 366)
	var v apperr.Violations
	if pageSize < 0 || pageSize > 1000 {
		v.Add("page_size", "must be 0-1000")
	}
	if pageSize == 0 {
		pageSize = 100
	}
	after, ok := decodePageToken(pageToken)
	if !ok {
		v.Add("page_token", "is not a token this listing returned")
	}
	if err := apperr.First(err, v.Err()); err != nil {
		return ReconciliationPage{}, err
	}
	rows, err := r.store.ListReconciliations(ctx, s, e, tenant, after, pageSize+1)
	if err != nil {
		return ReconciliationPage{}, fmt.Errorf("list reconciliations: %w", err)
	}
	page := ReconciliationPage{Rows: rows}
	if len(rows) > pageSize {
		page.Rows = rows[:pageSize]
		last := page.Rows[pageSize-1]
		page.NextPageToken = encodePageToken(last.Day.UTC().Format(time.DateOnly) + "|" + last.TenantID + "|" + string(last.Meter))
	}
	return page, nil
}

func encodePageToken(key string) string { return base64.RawURLEncoding.EncodeToString([]byte(key)) }

func decodePageToken(tok string) (string, bool) {
	if tok == "" {
		return "", true
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return "", false
	}
	parts := strings.SplitN(string(b), "|", 3)
	if len(parts) != 3 {
		return "", false
	}
	if _, err := time.Parse(time.DateOnly, parts[0]); err != nil {
		return "", false
	}
	return string(b), true
}

// ReconcileDays reconciles the days start..end (YYYY-MM-DD, end "" = start, at most
// MaxReconcileDays) of tenant (every tenant when "").
func (r *Reconciler) ReconcileDays(ctx context.Context, start, end, tenant string) ([]Reconciliation, error) {
	s, e, err := ParseDayRange(start, end, MaxReconcileDays)
	if err != nil {
		return nil, err
	}
	return r.Reconcile(ctx, s, e, tenant)
}
