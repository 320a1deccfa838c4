package analytics

import (
	"context"
	"fmt"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/usage"
)

// QueryRecorder records a tenant's analytics query as billable usage, durably: it returns
// only once the unit is stored (usage.Recorder stores it on the USAGE stream, which billing
// counts).
type QueryRecorder interface {
	RecordQuery(ctx context.Context, tenant string) error
}

// ErrUsageUnavailable is what a query answers (wrapping the cause) when it ran but its usage
// could not be recorded: the answer is withheld rather than given unbilled, and the client
// retries as for any unavailable dependency.
var ErrUsageUnavailable = func() error {
	e := apperr.New(apperr.Unavailable, "USAGE_UNAVAILABLE", "the query could not be recorded right now; retry shortly")
	e.RetryAfter = 2 * time.Second
	return e
}()

// RecordQuery records the one unit of usage of a public query that ran for tenant, before it
// is answered. Only queries that ran and are about to be answered count: a request refused
// before the query runs (invalid, unauthorized, over the concurrency limit) or a query that
// failed is not billed. A live metrics stream counts once, when its first push is sent.
func RecordQuery(ctx context.Context, rec QueryRecorder, tenant string) error {
	if err := rec.RecordQuery(ctx, tenant); err != nil {
		return fmt.Errorf("record query of tenant %s: %w: %w", tenant, ErrUsageUnavailable, err)
	}
	return nil
}

// TenantUsage is one tenant's usage of the analytics store (GetUsageCounts).
type TenantUsage struct {
	TenantID string
	// EventsStored counts the tenant's stored events received on the day.
	EventsStored int64
	// StorageBytes estimates the bytes the tenant's events take on disk now.
	StorageBytes int64
}

// UsageStore counts the usage the analytics store holds (clickhouse.Queries, on every shard).
type UsageStore interface {
	// UsageCounts returns, per tenant with stored events, the events received in [from, to)
	// and the storage estimate, by tenant id.
	UsageCounts(ctx context.Context, from, to time.Time) ([]TenantUsage, error)
}

// Usage answers billing's GetUsageCounts.
type Usage struct {
	store UsageStore
	now   func() time.Time
}

// NewUsage returns the usage counts over store.
func NewUsage(store UsageStore) *Usage { return &Usage{store: store, now: time.Now} }

// ParseUsageDay reads a UTC day (usage.ParseDay: YYYY-MM-DD, from 2000-01-01 to the day
// after now's) into a violation of v's field day when it is not one.
func ParseUsageDay(v *apperr.Violations, day string, now time.Time) time.Time {
	t, err := usage.ParseDay(day, now)
	if err != nil {
		v.Add("day", "%s", err.Error())
	}
	return t
}

// Counts returns every tenant's usage of the UTC day (YYYY-MM-DD).
func (u *Usage) Counts(ctx context.Context, day string) ([]TenantUsage, error) {
	var v apperr.Violations
	from := ParseUsageDay(&v, day, u.now())
	if err := v.Err(); err != nil {
		return nil, err
	}
	return u.store.UsageCounts(ctx, from, from.Add(24*time.Hour))
}
