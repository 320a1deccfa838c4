package clickhouse_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

// queriesVia is the query store with both its connections (reader and writer) going through
// a proxy to a database holding the data set.
func queriesVia(t *testing.T) (*clickhouse.Queries, *chtest.Proxy) {
	t.Helper()
	ctx := context.Background()
	db := chtest.NewDatabase(t)
	p := chtest.NewProxy(t)
	writer, err := clickhouse.Open(ctx, p.Addr(), db, clickhouse.User(chtest.Writer(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { writer.Close() })
	insert(t, writer, dataset, 1)
	reader, err := clickhouse.OpenReader(ctx, p.Addr(), db, clickhouse.User(chtest.Reader(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Close() })
	return clickhouse.NewQueries(reader, writer, clickhouse.DefaultQueryLimits).WithLogger(slog.New(slog.DiscardHandler)), p
}

// checkUnavailable asserts that err is what callers of a store that cannot be reached get:
// UNAVAILABLE with reason STORE_UNAVAILABLE and a retry delay, and no driver or network text.
func checkUnavailable(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, analytics.ErrStoreUnavailable) {
		t.Errorf("%s: %v, want analytics.ErrStoreUnavailable", what, err)
		return
	}
	st, ref := apperr.ToStatus(err)
	if ref != "" {
		t.Errorf("%s: an error reference %q, as for an internal error", what, ref)
	}
	meshtest.RequireStoreUnavailable(t, what, st)
}

// Each way of losing the server — gone (refused), dropping a connection mid-request (EOF or
// reset), not answering (a timeout reaching it) — is UNAVAILABLE with a retry delay for every
// store call, never INTERNAL; the caller's own cancellation stays CANCELLED.
func TestStoreThatCannotBeReachedIsUnavailable(t *testing.T) {
	ctx := context.Background()
	agg := analytics.Query{TenantID: "t1", Start: at("2026-03-28T00:00:00Z"), End: at("2026-03-31T00:00:00Z"), Dimension: analytics.Campaign}
	calls := map[string]func(*clickhouse.Queries) error{
		"aggregate": func(q *clickhouse.Queries) error { _, err := q.Aggregate(ctx, agg); return err },
		"funnel": func(q *clickhouse.Queries) error {
			_, err := q.Funnel(ctx, analytics.FunnelQuery{TenantID: "t1", Start: agg.Start, End: agg.End, Window: time.Hour,
				Steps: []analytics.FunnelStep{{EventName: "view"}, {EventName: "tap"}}})
			return err
		},
		"delete": func(q *clickhouse.Queries) error {
			_, err := q.Delete(ctx, analytics.Deletion{TenantID: "t1", SubjectID: "u1"})
			return err
		},
	}
	for _, kind := range []struct {
		name      string
		breakPath func(*chtest.Proxy)
	}{
		{"refused", (*chtest.Proxy).Close},
		{"cut mid-request", (*chtest.Proxy).Cut},
	} {
		t.Run(kind.name, func(t *testing.T) {
			for name, call := range calls {
				q, p := queriesVia(t)
				if err := call(q); err != nil {
					t.Fatalf("%s before the break: %v", name, err)
				}
				kind.breakPath(p)
				checkUnavailable(t, name, call(q))
			}
		})
	}
	t.Run("no answer", func(t *testing.T) {
		// One call: reaching a server that does not answer takes the dial timeout (5 s).
		q, p := queriesVia(t)
		p.Hang()
		checkUnavailable(t, "aggregate", calls["aggregate"](q))
	})
	t.Run("caller gave up", func(t *testing.T) {
		q, _ := queriesVia(t)
		canceled, cancel := context.WithCancel(ctx)
		cancel()
		_, err := q.Aggregate(canceled, agg)
		if st, _ := apperr.ToStatus(err); st.Code() != codes.Canceled {
			t.Errorf("aggregate with a canceled context: %v, want CANCELLED", err)
		}
	})
}
