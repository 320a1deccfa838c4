package pgdb_test

import (
	"context"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

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

func set(table string) fstest.MapFS {
	return fstest.MapFS{"00001_" + table + ".sql": {Data: []byte("-- +goose Up\nCREATE TABLE " + table + " (id int);\n")}}
}

// Each named set keeps its versions in its own table: a platform package's version 1 is not
// taken for the service's version 1, nor for another package's.
func TestMigrateNamedKeepsEachSetApart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := openDB(t)
	if err := pgdb.Migrate(ctx, pool, set("service_things")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"alpha", "beta"} {
		if err := pgdb.MigrateNamed(ctx, pool, name, set(name+"_things")); err != nil {
			t.Fatal(err)
		}
	}
	for _, table := range []string{"service_things", "alpha_things", "beta_things"} {
		if _, err := pool.Exec(ctx, "SELECT * FROM "+table); err != nil {
			t.Errorf("table %s: %v", table, err)
		}
	}
	for _, vt := range []string{"goose_db_version", "goose_alpha_version", "goose_beta_version"} {
		var v int64
		if err := pool.QueryRow(ctx, "SELECT max(version_id) FROM "+vt).Scan(&v); err != nil || v != 1 {
			t.Errorf("%s: version %d, %v; want 1", vt, v, err)
		}
	}
	// Again: nothing to do.
	if err := pgdb.MigrateNamed(ctx, pool, "alpha", set("alpha_things")); err != nil {
		t.Fatalf("second run: %v", err)
	}
}

func TestMigrateNamedRefusesOddNames(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"", "Audit", "a-b", "x; DROP TABLE y", "1abc"} {
		if err := pgdb.MigrateNamed(context.Background(), nil, name, set("t")); err == nil {
			t.Errorf("MigrateNamed(%q) accepted", name)
		}
	}
}
