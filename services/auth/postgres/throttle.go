package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/campaignmesh/campaignmesh/services/auth"
)

// LoginLockedUntil implements auth.Store.
func (s *Store) LoginLockedUntil(ctx context.Context, keys []string) (time.Time, error) {
	var until *time.Time
	if err := s.pool.QueryRow(ctx, `SELECT max(locked_until) FROM login_failures WHERE key = ANY($1)`, keys).Scan(&until); err != nil {
		return time.Time{}, fmt.Errorf("read login locks: %w", err)
	}
	if until == nil {
		return time.Time{}, nil
	}
	return *until, nil
}

// RecordLoginFailure implements auth.Store.
func (s *Store) RecordLoginFailure(ctx context.Context, key string, window time.Duration) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `INSERT INTO login_failures (key, failures, last_failure) VALUES ($1, 1, now())
		ON CONFLICT (key) DO UPDATE SET
			failures = CASE WHEN login_failures.last_failure < now() - $2::interval THEN 1 ELSE login_failures.failures + 1 END,
			last_failure = now()
		RETURNING failures`, key, window).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("record login failure: %w", err)
	}
	return n, nil
}

// LockLogin implements auth.Store.
func (s *Store) LockLogin(ctx context.Context, key string, until time.Time) error {
	if _, err := s.pool.Exec(ctx, `UPDATE login_failures SET locked_until = $2 WHERE key = $1`, key, until); err != nil {
		return fmt.Errorf("lock login: %w", err)
	}
	return nil
}

// ClearLoginFailures implements auth.Store. Without a record (a login's bookkeeping) it needs
// no transaction of its own.
func (s *Store) ClearLoginFailures(ctx context.Context, key string, rec *auth.AuditEntry) error {
	clear := func(db interface {
		Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
	}) error {
		if _, err := db.Exec(ctx, `DELETE FROM login_failures WHERE key = $1`, key); err != nil {
			return fmt.Errorf("clear login failures: %w", err)
		}
		return nil
	}
	if rec == nil {
		return clear(s.pool)
	}
	return s.inTx(ctx, rec, func(tx pgx.Tx) error { return clear(tx) })
}

// RememberLoginAddress implements auth.Store.
func (s *Store) RememberLoginAddress(ctx context.Context, account string, hash []byte, keep int, oldest time.Time) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO login_known_addresses (account, address_hash, last_seen) VALUES ($1, $2, now())
			ON CONFLICT (account, address_hash) DO UPDATE SET last_seen = excluded.last_seen`, account, hash); err != nil {
			return fmt.Errorf("remember login address: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM login_known_addresses WHERE account = $1 AND (last_seen < $2 OR address_hash NOT IN (
			SELECT address_hash FROM login_known_addresses WHERE account = $1 ORDER BY last_seen DESC LIMIT $3))`,
			account, oldest, keep); err != nil {
			return fmt.Errorf("forget old login addresses: %w", err)
		}
		return nil
	})
}

// KnownLoginAddress implements auth.Store.
func (s *Store) KnownLoginAddress(ctx context.Context, account string, hash []byte, oldest time.Time) (bool, error) {
	var known bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM login_known_addresses
		WHERE account = $1 AND address_hash = $2 AND last_seen >= $3)`, account, hash, oldest).Scan(&known); err != nil {
		return false, fmt.Errorf("read known login addresses: %w", err)
	}
	return known, nil
}
