package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

const apiKeyCols = `id::text, tenant_id::text, name, scopes, creator::text, expire_time, create_time, revoke_time, last_used_time`

func scanAPIKey(row pgx.CollectableRow) (auth.APIKey, error) {
	var k auth.APIKey
	err := row.Scan(&k.ID, &k.TenantID, &k.Name, &k.Scopes, &k.Creator, &k.ExpireTime, &k.CreateTime, &k.RevokeTime, &k.LastUsedTime)
	return k, err
}

func oneAPIKey(rows pgx.Rows, err error, id string) (auth.APIKey, error) {
	if err != nil {
		return auth.APIKey{}, fmt.Errorf("query api key: %w", err)
	}
	k, err := pgx.CollectExactlyOneRow(rows, scanAPIKey)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.APIKey{}, apperr.NotFoundf("api key %s", id)
	}
	if err != nil {
		return auth.APIKey{}, fmt.Errorf("read api key: %w", err)
	}
	return k, nil
}

// CreateAPIKey implements auth.Store.
func (s *Store) CreateAPIKey(ctx context.Context, k auth.APIKey, secretHash []byte, rec *auth.AuditEntry) (auth.APIKey, error) {
	var out auth.APIKey
	err := s.inTx(ctx, rec, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `INSERT INTO api_keys (id, tenant_id, name, scopes, secret_hash, creator, expire_time)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING `+apiKeyCols,
			k.ID, k.TenantID, k.Name, k.Scopes, secretHash, k.Creator, k.ExpireTime)
		out, err = oneAPIKey(rows, err, k.ID)
		return err
	})
	return out, err
}

// GetAPIKey implements auth.Store.
func (s *Store) GetAPIKey(ctx context.Context, tenantID, id string) (auth.APIKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+apiKeyCols+` FROM api_keys WHERE tenant_id = $1 AND id = $2`, tenantArg(tenantID), id)
	return oneAPIKey(rows, err, id)
}

// ListAPIKeys implements auth.Store.
func (s *Store) ListAPIKeys(ctx context.Context, tenantID string, p auth.Page) ([]auth.APIKey, error) {
	after := p.After
	if after == nil {
		after = &auth.Cursor{ID: "00000000-0000-0000-0000-000000000000"}
	}
	rows, err := s.pool.Query(ctx, `SELECT `+apiKeyCols+` FROM api_keys
		WHERE tenant_id = $1 AND (create_time, id) > ($2, $3::uuid) ORDER BY create_time, id LIMIT $4`,
		tenantArg(tenantID), after.CreateTime, after.ID, p.Size)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	ks, err := pgx.CollectRows(rows, scanAPIKey)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	return ks, nil
}

// RevokeAPIKey implements auth.Store.
func (s *Store) RevokeAPIKey(ctx context.Context, tenantID, id string, rec *auth.AuditEntry) (auth.APIKey, error) {
	var out auth.APIKey
	err := s.inTx(ctx, rec, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE api_keys SET revoke_time = coalesce(revoke_time, now())
			WHERE tenant_id = $1 AND id = $2 RETURNING `+apiKeyCols, tenantArg(tenantID), id)
		out, err = oneAPIKey(rows, err, id)
		return err
	})
	return out, err
}

// APIKeyForVerify implements auth.Store.
func (s *Store) APIKeyForVerify(ctx context.Context, id string) (auth.APIKey, []byte, auth.TenantState, error) {
	var k auth.APIKey
	var hash []byte
	var state auth.TenantState
	err := s.pool.QueryRow(ctx, `SELECT k.id::text, k.tenant_id::text, k.name, k.scopes, k.creator::text, k.expire_time,
		k.create_time, k.revoke_time, k.last_used_time, k.secret_hash, t.state, t.token_epoch
		FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.id = $1`, id).
		Scan(&k.ID, &k.TenantID, &k.Name, &k.Scopes, &k.Creator, &k.ExpireTime, &k.CreateTime, &k.RevokeTime, &k.LastUsedTime, &hash, &state,
			&k.TenantTokenEpoch)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.APIKey{}, nil, "", apperr.NotFoundf("api key %s", id)
	}
	if err != nil {
		return auth.APIKey{}, nil, "", fmt.Errorf("read api key for verification: %w", err)
	}
	return k, hash, state, nil
}

// TouchAPIKey implements auth.Store.
func (s *Store) TouchAPIKey(ctx context.Context, id string, interval time.Duration) error {
	_, err := s.pool.Exec(ctx, `UPDATE api_keys SET last_used_time = now()
		WHERE id = $1 AND (last_used_time IS NULL OR last_used_time < now() - $2::interval)`, id, interval)
	if err != nil {
		return fmt.Errorf("touch api key: %w", err)
	}
	return nil
}
