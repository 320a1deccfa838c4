package pgdb

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// MigrateNamed applies the goose migrations in fsys (SQL files at its root) of the platform
// table set called name (e.g. "audit_outbox"), versioned in its own table goose_<name>_version:
// a package that owns tables inside a service's database (the audit outbox, idempotency keys)
// changes them independently of the service's own migrations. The same advisory lock as
// Migrate serializes concurrent starts.
func MigrateNamed(ctx context.Context, pool *pgxpool.Pool, name string, fsys fs.FS) error {
	db := stdlib.OpenDBFromPool(pool)
	defer func(db *sql.DB) { _ = db.Close() }(db)
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("create migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, goose.WithSessionLocker(locker),
		goose.WithTableName("goose_"+name+"_version"))
	if err != nil {
		return fmt.Errorf("load %s migrations: %w", name, err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("apply %s migrations: %w", name, err)
	}
	return nil
}
