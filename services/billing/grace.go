package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
)

// TenantSuspender is the port to auth: it suspends a tenant for unpaid billing. Suspending a
// tenant already suspended succeeds and changes nothing, which makes the grace job safe to
// repeat.
type TenantSuspender interface {
	SuspendTenantForBilling(ctx context.Context, tenantID, reason string) error
}

// GraceStore is the grace job's port to the accounts' storage.
type GraceStore interface {
	// OverdueAccounts returns up to limit flagged accounts flagged at or before cutoff.
	OverdueAccounts(ctx context.Context, cutoff time.Time, limit int) ([]Account, error)
	// MarkSuspended sets the account's standing to suspended at at (unless it already is) and
	// writes rec with the change; changed is false when it already was.
	MarkSuspended(ctx context.Context, tenantID string, at time.Time, reason string, rec *audit.Record) (changed bool, err error)
}

// DefaultGracePeriod is how long an account may stay flagged before its tenant is suspended.
const DefaultGracePeriod = 168 * time.Hour

// AuditMethodGraceSuspend is the method of the audit record of an account the grace job
// suspended (actor service:billing).
const AuditMethodGraceSuspend = "billing.grace/Suspend"

// Grace suspends the tenants whose accounts stayed flagged longer than the grace period.
//
// Each overdue account takes two steps: auth suspends the tenant, then the account is marked
// suspended. A crash between them leaves the account flagged and overdue, so the next pass
// asks auth again (a no-op there) and marks it: the tenant is suspended at least once, the
// account marked once, and one audit record is written with the mark. An invoice paid between
// the two steps does not unflag a tenant auth already suspended: the mark applies to any
// standing but suspended, so billing and auth agree, and the operator reinstates.
type Grace struct {
	store     GraceStore
	suspender TenantSuspender
	period    time.Duration
	interval  time.Duration
	now       func() time.Time
	log       *slog.Logger
}

// GraceOption configures a Grace job.
type GraceOption func(*Grace)

// WithGracePeriod sets the grace period (default DefaultGracePeriod).
func WithGracePeriod(d time.Duration) GraceOption { return func(g *Grace) { g.period = d } }

// WithGraceInterval sets how often Run looks for overdue accounts (default one minute).
func WithGraceInterval(d time.Duration) GraceOption { return func(g *Grace) { g.interval = d } }

// WithGraceClock sets the job's clock (tests).
func WithGraceClock(now func() time.Time) GraceOption { return func(g *Grace) { g.now = now } }

// WithGraceLogger sets the job's logger.
func WithGraceLogger(l *slog.Logger) GraceOption { return func(g *Grace) { g.log = l } }

// NewGrace returns the grace job.
func NewGrace(store GraceStore, suspender TenantSuspender, opts ...GraceOption) (*Grace, error) {
	g := &Grace{store: store, suspender: suspender, period: DefaultGracePeriod, interval: time.Minute,
		now: time.Now, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(g)
	}
	if g.period <= 0 || g.interval <= 0 {
		return nil, errors.New("grace period and interval must be positive")
	}
	return g, nil
}

// Run runs passes every interval until ctx ends; a failed pass is logged and retried at the
// next tick.
func (g *Grace) Run(ctx context.Context) error {
	t := time.NewTicker(g.interval)
	defer t.Stop()
	for {
		if _, err := g.Pass(ctx); err != nil && ctx.Err() == nil {
			g.log.ErrorContext(ctx, "grace pass", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// gracePassLimit bounds the accounts one pass handles; the next pass takes the rest.
const gracePassLimit = 100

// Pass suspends every overdue account once and returns how many it marked suspended.
func (g *Grace) Pass(ctx context.Context) (int, error) {
	now := g.now().UTC()
	accs, err := g.store.OverdueAccounts(ctx, now.Add(-g.period), gracePassLimit)
	if err != nil {
		return 0, fmt.Errorf("list overdue accounts: %w", err)
	}
	n := 0
	var errs []error
	for _, acc := range accs {
		reason := fmt.Sprintf("flagged since %s (%s): grace period %s over", acc.FlaggedAt.UTC().Format(time.RFC3339), acc.StatusReason, g.period)
		if err := g.suspender.SuspendTenantForBilling(ctx, acc.TenantID, reason); err != nil {
			errs = append(errs, fmt.Errorf("suspend tenant %s: %w", acc.TenantID, err))
			continue
		}
		wctx := audit.WithWork(ctx, func() audit.Record {
			return audit.Record{Method: AuditMethodGraceSuspend, Actor: "service:billing", ActorKind: "service", Service: "billing"}
		})
		var rec *audit.Record
		if r, ok := audit.Take(wctx, "", AccountAuditResource(acc.TenantID)); ok {
			rec = &r
		}
		changed, err := g.store.MarkSuspended(ctx, acc.TenantID, now, reason, rec)
		if err != nil {
			errs = append(errs, fmt.Errorf("mark account of %s suspended: %w", acc.TenantID, err))
			continue
		}
		if changed {
			n++
			g.log.InfoContext(ctx, "tenant suspended for billing", "tenant_id", acc.TenantID)
		}
	}
	return n, errors.Join(errs...)
}
