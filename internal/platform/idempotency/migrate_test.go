package idempotency_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/campaignmesh/campaignmesh/internal/platform/idempotency"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
)

func openDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pool, err := pgdb.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// legacyDDL is how idempotency.New created the table at start before it had migrations.
const legacyDDL = `CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope        text NOT NULL,
    method       text NOT NULL,
    request_id   text NOT NULL,
    request_hash bytea NOT NULL,
    response     bytea,
    create_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, method, request_id)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_age ON idempotency_keys (create_time);`

// A dev database from before the migrations keeps its request ids: the first migration adopts
// the table, its version is recorded in the package's own version table, and a second start
// has nothing to do.
func TestMigrationsAdoptExistingTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := openDB(t)
	if _, err := pool.Exec(ctx, legacyDDL); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO idempotency_keys (scope, method, request_id, request_hash, response)
		VALUES ('tenant:t1', '/m/A', 'r1', '\x01', '\x02'), ('tenant:t1', '/m/A', 'r2', '\x03', NULL)`); err != nil {
		t.Fatal(err)
	}
	for run := 1; run <= 2; run++ {
		if _, err := idempotency.New(ctx, pool); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		var rows, applied, version int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys`).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if err := pool.QueryRow(ctx, `SELECT count(*), max(version_id) FROM goose_idempotency_version WHERE version_id > 0`).Scan(&applied, &version); err != nil {
			t.Fatalf("run %d: version table: %v", run, err)
		}
		if rows != 2 || applied != 1 || version != 1 {
			t.Fatalf("run %d: %d rows, %d versions applied, latest %d; want 2 rows and version 1 applied once", run, rows, applied, version)
		}
	}
}

// On a new database the migrations make the table the store uses.
func TestMigrationsCreateTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := openDB(t)
	if _, err := idempotency.New(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE tablename = 'idempotency_keys' AND indexname = 'idempotency_keys_age'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("age index: %d, %v", n, err)
	}
}
