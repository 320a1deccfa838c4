package analytics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
)

// Retention deletes raw events older than their tenant's retention (privacy.Policy's
// RetentionDays, from the PRIVACY bucket's view) and, deployment-wide, the months of raw events
// entirely older than a number of days. ClickHouse 18.16 has no TTL, so each run does it by hand,
// on every shard:
//   - A deployment retention drops the partitions (months) of events_local that end at or
//     before its cutoff: a file operation, no mutation. A month goes once it is entirely older,
//     so a row lives at most a month longer than the deployment retention.
//   - Tenant retentions are enforced by one ALTER TABLE … DELETE mutation per shard and run,
//     covering every tenant due, and only when a count shows rows to delete: a mutation
//     rewrites whole parts, so one per tenant would not scale. While a shard's previous
//     retention mutation still runs, the shard is left for the next run rather than given a
//     second one. A tenant's rows are thus gone within one run interval (plus the mutation's
//     own time) of passing its retention.
//
// Rollups (events_hourly) are not touched: they keep the counts, sums and distinct-user states
// of expired hours. The dedup table (event_ids) holds no subject identifiers and expires by day
// after the writer's dedup window (at most 30 days).
type Retention struct {
	shards   []RetentionStore
	policies PolicySource
	days     int
	now      func() time.Time
	logger   *slog.Logger

	m RetentionMetrics
}

// RetentionMetrics are what retention has done, as registered counters.
type RetentionMetrics struct {
	// Runs counts runs, Failures the steps that failed on a shard, Mutations the deletions
	// started, Dropped the months dropped, Expired the rows counted for the deletions started.
	Runs, Failures, Mutations, Dropped, Expired prometheus.Counter
}

// PolicySource gives every tenant's privacy policy that differs from the default
// (*privacy.View).
type PolicySource interface {
	Policies() map[string]privacy.Policy
}

// RetentionRule is a set of tenants whose raw events before a time are to be deleted.
type RetentionRule struct {
	Tenants []string
	Before  time.Time
}

// RetentionStore is one shard's raw events, as Retention needs them
// (services/analytics/clickhouse.Retention).
type RetentionStore interface {
	// CountExpired counts the rows of rules' tenants older than their rule's time.
	CountExpired(ctx context.Context, rules []RetentionRule) (uint64, error)
	// Deleting tells whether a retention deletion begun earlier still runs on the shard.
	Deleting(ctx context.Context) (bool, error)
	// DeleteExpired starts one deletion (a mutation) of the rows CountExpired counts.
	DeleteExpired(ctx context.Context, rules []RetentionRule) error
	// DropMonthsBefore drops every month of raw events that ends at or before before and
	// returns the months dropped (YYYYMM).
	DropMonthsBefore(ctx context.Context, before time.Time) ([]string, error)
}

// NewRetention returns retention over shards (one store per shard) with tenants' policies from
// policies and a deployment retention of days (0 keeps everything); its metrics are registered
// with reg when it is not nil, and now is its clock (nil: time.Now).
func NewRetention(shards []RetentionStore, policies PolicySource, days int, now func() time.Time, logger *slog.Logger, reg prometheus.Registerer) *Retention {
	if now == nil {
		now = time.Now
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	r := &Retention{shards: shards, policies: policies, days: days, now: now, logger: logger, m: RetentionMetrics{
		Runs:      counter("retention_runs_total", "Retention runs (every shard checked once)."),
		Failures:  counter("retention_failures_total", "Retention steps that failed on a shard; the next run tries again."),
		Mutations: counter("retention_mutations_total", "ALTER TABLE events_local DELETE mutations started by retention (at most one per shard and run)."),
		Dropped:   counter("retention_partitions_dropped_total", "Months of raw events dropped for the deployment retention (-retention-days)."),
		Expired:   counter("retention_expired_rows_total", "Raw event rows past their tenant's retention when a run started a mutation for them."),
	}}
	if reg != nil {
		reg.MustRegister(r.m.Runs, r.m.Failures, r.m.Mutations, r.m.Dropped, r.m.Expired)
	}
	return r
}

// Metrics returns retention's counters.
func (r *Retention) Metrics() RetentionMetrics { return r.m }

// Rules returns the deletions tenants' policies ask for at now: one rule per retention length,
// holding its tenants (sorted), ordered by length.
func Rules(policies map[string]privacy.Policy, now time.Time) []RetentionRule {
	byDays := map[int][]string{}
	for tenant, p := range policies {
		if p.RetentionDays > 0 && tenant != "" {
			byDays[p.RetentionDays] = append(byDays[p.RetentionDays], tenant)
		}
	}
	var rules []RetentionRule
	for _, days := range slices.Sorted(maps.Keys(byDays)) {
		slices.Sort(byDays[days])
		rules = append(rules, RetentionRule{Tenants: byDays[days], Before: now.Add(-time.Duration(days) * 24 * time.Hour).Truncate(time.Second)})
	}
	return rules
}

// RunOnce checks every shard once: drops the months past the deployment retention, then starts
// the shard's tenant deletion when rows are due and none runs yet. A failing shard is logged and
// counted, and the others still run; the error joins the shards' errors.
func (r *Retention) RunOnce(ctx context.Context) error {
	now := r.now()
	rules := Rules(r.policies.Policies(), now)
	r.m.Runs.Inc()
	var errs []error
	for i, shard := range r.shards {
		if err := r.runShard(ctx, i, shard, now, rules); err != nil {
			r.m.Failures.Inc()
			r.logger.Warn("retention on a shard; trying again at the next run", "shard", i, "err", err)
			errs = append(errs, fmt.Errorf("shard %d: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Retention) runShard(ctx context.Context, i int, shard RetentionStore, now time.Time, rules []RetentionRule) error {
	if r.days > 0 {
		months, err := shard.DropMonthsBefore(ctx, now.Add(-time.Duration(r.days)*24*time.Hour))
		if err != nil {
			return err
		}
		if len(months) > 0 {
			r.m.Dropped.Add(float64(len(months)))
			r.logger.Info("retention dropped months of raw events", "shard", i, "months", months, "retention_days", r.days)
		}
	}
	if len(rules) == 0 {
		return nil
	}
	if running, err := shard.Deleting(ctx); err != nil {
		return err
	} else if running {
		r.logger.Info("retention deletion of the previous run still running; shard left for the next run", "shard", i)
		return nil
	}
	n, err := shard.CountExpired(ctx, rules)
	if err != nil || n == 0 {
		return err
	}
	if err := shard.DeleteExpired(ctx, rules); err != nil {
		return err
	}
	tenants := 0
	for _, rule := range rules {
		tenants += len(rule.Tenants)
	}
	r.m.Mutations.Inc()
	r.m.Expired.Add(float64(n))
	r.logger.Info("retention deletion started", "shard", i, "rows", n, "tenants_with_retention", tenants)
	return nil
}

// Run runs RunOnce after first, then every every, until ctx ends (then it returns nil). A run's
// failure is logged and tried again at the next.
func (r *Retention) Run(ctx context.Context, first, every time.Duration) error {
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		_ = r.RunOnce(ctx)
		t.Reset(every)
	}
}
