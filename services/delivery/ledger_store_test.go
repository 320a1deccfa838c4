package delivery_test

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
)

// openLedger gives the test its own database with delivery's migrations applied, and the
// ledger store over it. (Until delivery's store.go with its Open lands, the migrations are
// applied here from the source tree.)
func openLedger(tb testing.TB) (*postgres.Ledger, *pgxpool.Pool) {
	tb.Helper()
	ctx := context.Background()
	// pgxpool's default of max(4, CPUs) connections would make the sender's concurrent
	// outcome writes queue for a connection; the service's URL sets pool_max_conns likewise.
	pool, err := pgdb.Open(ctx, pgtest.NewDatabase(tb)+"&pool_max_conns=16")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	if err := pgdb.Migrate(ctx, pool, os.DirFS("postgres/migrations")); err != nil {
		tb.Fatal(err)
	}
	return postgres.NewLedger(pool), pool
}
