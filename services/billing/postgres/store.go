// Package postgres is the billing service's PostgreSQL store: usage, plans, and the Stripe
// side (customers, meter-event reports, webhook events, reconciliations).
package postgres

import (
	"context"
	"embed"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"

	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the billing database.
type Store struct{ pool *pgxpool.Pool }

// Open connects to the database at url and applies the migrations. Changes write the audit
// records they are handed into the audit outbox's table, which Open creates too.
func Open(ctx context.Context, url string) (*Store, error) {
	pool, err := pgdb.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	sub, _ := fs.Sub(migrations, "migrations")
	if err = pgdb.Migrate(ctx, pool, sub); err == nil {
		err = auditpg.Migrate(ctx, pool)
	}
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &Store{pool: pool}, nil
}

// Close closes the connection pool.
func (s *Store) Close() { s.pool.Close() }

// Pool exposes the pool to the service's other tables (idempotency keys, audit outbox) and to
// tests.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }
