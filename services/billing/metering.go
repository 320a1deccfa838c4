package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
)

// The metering job keeps the usage table equal to what the sources of truth say, so a crash or
// a retry anywhere never counts a unit twice nor loses one:
//
//   - Every unit is recorded where it happens, durably and keyed: each accepted batch's events
//     per day by the analytics writer, each analytics query by analytics, as units on the
//     USAGE stream, which billing's consumer stores in usage_units by their ids (in the
//     transaction before its ack); the events stored, the messages sent and the contacts are
//     counted by their owners (analytics' ClickHouse, delivery's ledger) on request.
//   - The job recomputes each open day's value from those records and UPSERTs it: running it
//     twice, or again after a crash halfway, writes the same numbers. Nothing is incremented.
//   - A day closes (its values become final) once it ended more than CloseAfter ago, after a
//     last recompute in which every source answered; a source that fails leaves its meters as
//     they were (never zeroed) and the day open.

// SourceCounts are one tenant's values, by meter, on one day, as a source of truth counts them.
type SourceCounts struct {
	TenantID string
	Values   map[Meter]int64
}

// Source counts some meters per tenant for a day (analytics: events_stored, storage_bytes;
// delivery: messages_email, messages_sms, contacts_stored). A tenant it does not list has 0
// units of its meters that day. Gauges are measured now: the job asks for them only for today.
type Source interface {
	Meters() []Meter
	UsageCounts(ctx context.Context, day time.Time) ([]SourceCounts, error)
}

// Crossing is a period's usage of a meter going past its limit, as the job first saw it.
type Crossing struct {
	TenantID    string
	Limit       Limit
	PeriodStart time.Time
	Used        int64
}

// MeteringStore is what the metering job reads and writes.
type MeteringStore interface {
	// OpenDays are the days from since to until that hold usage or recorded units not yet
	// closed.
	OpenDays(ctx context.Context, since, until time.Time) ([]time.Time, error)
	// DayUsage is every usage row of day.
	DayUsage(ctx context.Context, day time.Time) ([]Usage, error)
	// UnitCounts are the units recorded on day, per tenant and meter (usage_units).
	UnitCounts(ctx context.Context, day time.Time) (map[string]map[Meter]int64, error)
	// SaveUsage UPSERTs rows (all of day), leaving closed rows as they are; with close, every
	// row of day is closed afterwards.
	SaveUsage(ctx context.Context, day time.Time, rows []Usage, close bool) error
	// Plans are every tenant's plan.
	Plans(ctx context.Context) ([]Plan, error)
	// PeriodUsage is tenant's usage of meter in [start, end): the sum of a counter's days, a
	// gauge's latest value before end.
	PeriodUsage(ctx context.Context, tenantID string, meter Meter, start, end time.Time) (int64, error)
	// RecordCrossing stores c unless its (tenant, meter, period) crossing is already stored, and
	// then rec (when given) in the same transaction; it reports whether c was new.
	RecordCrossing(ctx context.Context, c Crossing, rec *audit.Record) (bool, error)
}

// Quota is one limit with the usage of its current period, as published to the services that
// enforce it (the QUOTAS bucket).
type Quota struct {
	Meter    Meter
	Limit    int64
	Hard     bool
	Period   Period
	Used     int64
	ResetsAt time.Time
}

// Quotas are a tenant's quotas; Used covers the units up to AsOf.
type Quotas struct {
	AsOf   time.Time
	Quotas []Quota
}

// QuotaPublisher makes a tenant's quotas known to the enforcing services. Publish with no quotas
// removes them.
type QuotaPublisher interface {
	PublishQuotas(ctx context.Context, tenantID string, q Quotas) error
}

// CrossingMetrics counts the crossings the job records.
type CrossingMetrics interface {
	QuotaCrossed(meter Meter, hard bool)
	// MeteringSucceeded says a round recomputed every day and published the quotas at t.
	MeteringSucceeded(t time.Time)
}

// MeteringConfig are the job's settings.
type MeteringConfig struct {
	// Interval between recomputes (default 15s).
	Interval time.Duration
	// CloseAfter is how long after its end a day becomes final (default 48h).
	CloseAfter time.Duration
}

// DefaultMetering are the defaults.
var DefaultMetering = MeteringConfig{Interval: 15 * time.Second, CloseAfter: 48 * time.Hour}

// UnitMeters are the meters counted from the units of the USAGE stream.
func UnitMeters() []Meter { return []Meter{EventsAccepted, AnalyticsQueries} }

// MaxRecordDelay is how long after its day a unit may still be recorded: the event stream keeps
// an unwritten batch 7 days (natsjs.DefaultStream.MaxAge), the USAGE stream a unit as long.
const MaxRecordDelay = 8 * 24 * time.Hour

// AuditMethodQuotaCrossed is the method of the audit record of a quota crossing.
const AuditMethodQuotaCrossed = "billing.metering/QuotaCrossed"

// Metering is the job that recomputes usage and publishes quotas.
type Metering struct {
	store        MeteringStore
	sources      []Source
	quotas       QuotaPublisher
	metrics      CrossingMetrics
	acceptedAsOf func(now time.Time) time.Time
	cfg          MeteringConfig
	logger       *slog.Logger
	now          func() time.Time

	mu sync.Mutex
	// lastAsOf is the as-of time of the last round's quotas (PublishTenantQuotas).
	lastAsOf time.Time
}

// NewMetering returns the job over store and the sources that are configured (a nil source is
// left out: its meters stay at what the table holds, 0 for a new day).
func NewMetering(store MeteringStore, cfg MeteringConfig, logger *slog.Logger, sources ...Source) *Metering {
	m := &Metering{store: store, cfg: cfg, logger: logger, now: time.Now}
	for _, s := range sources {
		if s != nil {
			m.sources = append(m.sources, s)
		}
	}
	if m.cfg.Interval <= 0 {
		m.cfg.Interval = DefaultMetering.Interval
	}
	if m.cfg.CloseAfter <= 0 {
		m.cfg.CloseAfter = DefaultMetering.CloseAfter
	}
	return m
}

// WithQuotas publishes the quotas after each recompute through p, counting crossings in metrics
// (nil: not counted).
func (m *Metering) WithQuotas(p QuotaPublisher, metrics CrossingMetrics) *Metering {
	m.quotas, m.metrics = p, metrics
	return m
}

// WithAcceptedAsOf says up to when the events_accepted records are complete: asOf(now) is a
// time before which every accepted batch's units are recorded (the USAGE consumer's
// AcceptedAsOf), zero while unknown. The published quotas' AsOf is that time, so the enforcing
// services add their own units since then; while it is unknown no quotas are published (the
// enforcing services keep the last ones and go on counting since their as-of).
func (m *Metering) WithAcceptedAsOf(asOf func(now time.Time) time.Time) *Metering {
	m.acceptedAsOf = asOf
	return m
}

// WithClock replaces time.Now (tests).
func (m *Metering) WithClock(now func() time.Time) *Metering {
	m.now = now
	return m
}

// Run recomputes every Interval until ctx ends. A failed round is logged and retried at the next.
func (m *Metering) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		if err := m.RunOnce(ctx); err != nil && ctx.Err() == nil {
			m.logger.ErrorContext(ctx, "metering round", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RunOnce recomputes today, yesterday and every other open day, closes the days that ended
// more than CloseAfter ago, then publishes the quotas.
func (m *Metering) RunOnce(ctx context.Context) error {
	now := m.now().UTC()
	asOf := now
	if m.acceptedAsOf != nil { // read before the units: any recorded later only adds to used
		asOf = m.acceptedAsOf(now)
		if asOf.After(now) {
			asOf = now
		}
	}
	today := Day(now)
	// Units of a day older than the stream keeps a batch, plus the time a day stays open, can
	// only come from a billing stopped that long: the look-back bounds each round's scan.
	open, err := m.store.OpenDays(ctx, today.Add(-m.cfg.CloseAfter-MaxRecordDelay), today)
	if err != nil {
		return fmt.Errorf("list open days: %w", err)
	}
	days := []time.Time{today, today.AddDate(0, 0, -1)}
	for _, d := range open {
		if !d.Equal(days[0]) && !d.Equal(days[1]) {
			days = append(days, d)
		}
	}
	var errs []error
	for _, d := range days {
		if err := m.recompute(ctx, d, now); err != nil {
			errs = append(errs, fmt.Errorf("day %s: %w", d.Format(DayLayout), err))
		}
	}
	m.mu.Lock()
	m.lastAsOf = asOf
	m.mu.Unlock()
	if m.quotas != nil && !asOf.IsZero() {
		if err := m.PublishQuotas(ctx, asOf, ""); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 && m.metrics != nil {
		m.metrics.MeteringSucceeded(m.now())
	}
	return errors.Join(errs...)
}

// recompute writes day's values from the sources; it closes the day when it is old enough and
// every source answered.
func (m *Metering) recompute(ctx context.Context, day, now time.Time) error {
	existing, err := m.store.DayUsage(ctx, day)
	if err != nil {
		return fmt.Errorf("read usage: %w", err)
	}
	values := map[Meter]map[string]int64{}
	// Every meter this round computes starts from the tenants the table holds for it at 0, so
	// units that are gone from the source (e.g. an erased contact) are written as gone.
	computed := map[Meter]bool{}
	compute := func(meter Meter) {
		computed[meter] = true
		values[meter] = map[string]int64{}
		for _, u := range existing {
			if u.Meter == meter {
				values[meter][u.TenantID] = 0
			}
		}
	}
	units, err := m.store.UnitCounts(ctx, day)
	if err != nil {
		return fmt.Errorf("count recorded units: %w", err)
	}
	for _, meter := range UnitMeters() {
		compute(meter)
	}
	for t, byMeter := range units {
		for meter, n := range byMeter {
			if computed[meter] {
				values[meter][t] = n
			}
		}
	}
	isToday := day.Equal(Day(now))
	complete := true
	for _, src := range m.sources {
		counts, err := src.UsageCounts(ctx, day)
		if err != nil {
			complete = false
			m.logger.WarnContext(ctx, "usage source failed; its meters keep their values", "day", day.Format(DayLayout), "meters", src.Meters(), "error", err)
			continue
		}
		for _, meter := range src.Meters() {
			if meter.Gauge() && !isToday {
				continue // a past day keeps its last measurement
			}
			compute(meter)
		}
		for _, c := range counts {
			for meter, n := range c.Values {
				if computed[meter] && (!meter.Gauge() || isToday) && n >= 0 {
					values[meter][c.TenantID] = n
				}
			}
		}
	}
	var rows []Usage
	for _, meter := range Meters() {
		for t, n := range values[meter] {
			rows = append(rows, Usage{TenantID: t, Day: day, Meter: meter, Value: n})
		}
	}
	closeDay := complete && !now.Before(day.AddDate(0, 0, 1).Add(m.cfg.CloseAfter))
	if err := m.store.SaveUsage(ctx, day, rows, closeDay); err != nil {
		return fmt.Errorf("save usage: %w", err)
	}
	return nil
}

// PublishTenantQuotas publishes tenantID's quotas now (after a plan change) with the usage
// and as-of time of the last round, so the enforcing services go on adding their own units
// since then.
func (m *Metering) PublishTenantQuotas(ctx context.Context, tenantID string) error {
	m.mu.Lock()
	asOf := m.lastAsOf
	m.mu.Unlock()
	if asOf.IsZero() {
		if m.acceptedAsOf != nil {
			return nil // not caught up yet: the first round that is publishes every tenant's
		}
		asOf = m.now().UTC()
	}
	return m.PublishQuotas(ctx, asOf, tenantID)
}

// PublishQuotas publishes the quotas of tenantID (empty: of every tenant with a plan) as of
// asOf, and records (and audits) the limits first seen crossed.
func (m *Metering) PublishQuotas(ctx context.Context, asOf time.Time, tenantID string) error {
	if m.quotas == nil {
		return nil
	}
	plans, err := m.store.Plans(ctx)
	if err != nil {
		return fmt.Errorf("read plans: %w", err)
	}
	var errs []error
	for _, p := range plans {
		if tenantID != "" && p.TenantID != tenantID {
			continue
		}
		q, err := m.tenantQuotas(ctx, p, asOf)
		if err == nil {
			err = m.quotas.PublishQuotas(ctx, p.TenantID, q)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("quotas of tenant %s: %w", p.TenantID, err))
		}
	}
	return errors.Join(errs...)
}

func (m *Metering) tenantQuotas(ctx context.Context, p Plan, asOf time.Time) (Quotas, error) {
	q := Quotas{AsOf: asOf, Quotas: []Quota{}}
	for _, l := range p.Limits {
		start, end := l.Period.Bounds(asOf)
		used, err := m.store.PeriodUsage(ctx, p.TenantID, l.Meter, start, end)
		if err != nil {
			return Quotas{}, fmt.Errorf("usage of %s: %w", l.Meter, err)
		}
		q.Quotas = append(q.Quotas, Quota{Meter: l.Meter, Limit: l.Limit, Hard: l.Hard, Period: l.Period, Used: used, ResetsAt: end})
		if !Crossed(l, used) {
			continue
		}
		c := Crossing{TenantID: p.TenantID, Limit: l, PeriodStart: start, Used: used}
		wctx := audit.WithWork(ctx, func() audit.Record {
			return audit.Record{Method: AuditMethodQuotaCrossed, TenantID: p.TenantID, Actor: "service:billing", ActorKind: "service",
				Outcome: codes.OK, Service: "billing"}
		})
		rec, ok := audit.Take(wctx, p.TenantID, crossingResource(c))
		var recp *audit.Record
		if ok {
			recp = &rec
		}
		fresh, err := m.store.RecordCrossing(wctx, c, recp)
		if err != nil {
			return Quotas{}, fmt.Errorf("record crossing of %s: %w", l.Meter, err)
		}
		if fresh {
			m.logger.InfoContext(ctx, "quota crossed", "tenant_id", p.TenantID, "meter", string(l.Meter), "period", string(l.Period),
				"limit", l.Limit, "used", used, "hard", l.Hard)
			if m.metrics != nil {
				m.metrics.QuotaCrossed(l.Meter, l.Hard)
			}
		}
	}
	return q, nil
}

// Crossed reports whether used has gone past l: beyond a soft limit; at a hard one, reached
// (the enforcing services refuse what would go beyond it, so usage stops there).
func Crossed(l Limit, used int64) bool {
	if l.Hard {
		return used > 0 && used >= l.Limit
	}
	return used > l.Limit
}

func crossingResource(c Crossing) string {
	return "quotas/" + string(c.Limit.Meter) + "/" + string(c.Limit.Period) + "/" + c.PeriodStart.Format(DayLayout)
}
