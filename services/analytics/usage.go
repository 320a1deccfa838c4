package analytics

import (
	"context"
	"fmt"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
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
