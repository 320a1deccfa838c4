// Package pgdb opens a service's PostgreSQL database and applies embedded goose migrations: the
// service's own (Migrate) and those of the platform packages that keep a table in the service's
// database (MigrateNamed), each set with its own version table so they evolve independently.
package pgdb

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// Open connects to url and checks the connection within a bounded time. Each later connection
// attempt of the pool is bounded by the URL's connect_timeout, else by ConnectTimeout.
func Open(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse postgres url: invalid format") // the url holds a password: never echo it
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = ConnectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to postgres %s:%d/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	return pool, nil
}

// Migrate applies the service's own goose migrations in fsys (SQL files at its root) to the
// database; their versions are kept in goose's default table, goose_db_version. A session
// advisory lock makes concurrent starts of several replicas safe.
func Migrate(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS) error {
	return migrate(ctx, pool, "goose_db_version", fsys)
}

var validSetName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)

// MigrateNamed applies a named set of goose migrations that a platform package embeds for the
// table it keeps in a service's database (e.g. "idempotency" for idempotency_keys). The set's
// versions are kept in their own table, goose_<name>_version, so its numbering is independent
// of the service's migrations and of every other set. Same lock as Migrate.
func MigrateNamed(ctx context.Context, pool *pgxpool.Pool, name string, fsys fs.FS) error {
	if !validSetName.MatchString(name) {
		return fmt.Errorf("migration set name %q: want lowercase letters, digits and '_'", name)
	}
	if err := migrate(ctx, pool, "goose_"+name+"_version", fsys); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func migrate(ctx context.Context, pool *pgxpool.Pool, table string, fsys fs.FS) error {
	db := stdlib.OpenDBFromPool(pool)
	defer func(db *sql.DB) { _ = db.Close() }(db)
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("create migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, goose.WithSessionLocker(locker), goose.WithTableName(table))
	if err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	return nil
}
