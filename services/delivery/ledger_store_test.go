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
	l, pool, _ := openLedgerURL(tb)
	return l, pool
}

// openLedgerURL is openLedger that also returns the database's URL.
func openLedgerURL(tb testing.TB) (*postgres.Ledger, *pgxpool.Pool, string) {
	tb.Helper()
	url := pgtest.NewDatabase(tb)
	pool := openPool(tb, url)
	if err := pgdb.Migrate(context.Background(), pool, os.DirFS("postgres/migrations")); err != nil {
		tb.Fatal(err)
	}
	return postgres.NewLedger(pool), pool, url
}

// openPool opens a pool of 16 connections: pgxpool's default of max(4, CPUs) would make the
// sender's concurrent outcome writes queue for a connection (a service sets pool_max_conns
// in its URL likewise).
func openPool(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	pool, err := pgdb.Open(context.Background(), url+"&pool_max_conns=16")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}
