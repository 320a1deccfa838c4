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

// InsertRefreshToken implements auth.Store.
func (s *Store) InsertRefreshToken(ctx context.Context, t auth.RefreshToken, rec *auth.AuditEntry) error {
	return s.inTx(ctx, rec, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO refresh_tokens (token_hash, family_id, user_id, expire_time, family_start_time)
			VALUES ($1, $2, $3, $4, $5)`, t.Hash, t.FamilyID, t.UserID, t.ExpireTime, t.FamilyStartTime)
		if err != nil {
			return fmt.Errorf("insert refresh token: %w", err)
		}
		return nil
	})
}

// RefreshTokenUser implements auth.Store.
func (s *Store) RefreshTokenUser(ctx context.Context, hash []byte) (auth.User, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userColsU+` FROM users u JOIN refresh_tokens r ON r.user_id = u.id WHERE r.token_hash = $1`, hash)
	if err != nil {
		return auth.User{}, fmt.Errorf("query refresh token user: %w", err)
	}
	u, err := pgx.CollectExactlyOneRow(rows, scanUser)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.User{}, apperr.NotFoundf("refresh token")
	}
	if err != nil {
		return auth.User{}, fmt.Errorf("read refresh token user: %w", err)
	}
	return u, nil
}

// RotateRefreshToken implements auth.Store.
func (s *Store) RotateRefreshToken(ctx context.Context, hash []byte, next auth.RefreshToken, oldestStart time.Time, rec *auth.AuditEntry) (auth.User, time.Time, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return auth.User{}, time.Time{}, fmt.Errorf("begin refresh: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var family, userID string
	var expire, familyStart time.Time
	var used, revoked *time.Time
	err = tx.QueryRow(ctx, `SELECT family_id::text, user_id::text, expire_time, used_time, revoke_time, family_start_time
		FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE`, hash).Scan(&family, &userID, &expire, &used, &revoked, &familyStart)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.User{}, time.Time{}, auth.ErrRefreshInvalid
	}
	if err != nil {
		return auth.User{}, time.Time{}, fmt.Errorf("read refresh token: %w", err)
	}
	var u auth.User
	var tenantState *string
	err = tx.QueryRow(ctx, `SELECT `+userColsU+`, t.state FROM users u LEFT JOIN tenants t ON t.id = u.tenant_id WHERE u.id = $1`, userID).
		Scan(&u.ID, &u.TenantID, &u.Email, &u.DisplayName, &u.Role, &u.State, &u.CreateTime, &u.UpdateTime,
			&u.TokenEpoch, &u.TenantTokenEpoch, &tenantState)
	if err != nil {
		return auth.User{}, time.Time{}, fmt.Errorf("read refresh token user: %w", err)
	}
	active := u.State == auth.UserActive && (tenantState == nil || *tenantState == string(auth.TenantActive))
	switch {
	case revoked != nil || !expire.After(time.Now()) || familyStart.Before(oldestStart):
		return u, time.Time{}, auth.ErrRefreshInvalid
	case used != nil || !active:
		// Reuse of a rotated token (or a session of a user who lost access): end the family.
		if _, err := tx.Exec(ctx, `UPDATE refresh_tokens SET revoke_time = now() WHERE family_id = $1 AND revoke_time IS NULL`, family); err != nil {
			return auth.User{}, time.Time{}, fmt.Errorf("revoke refresh family: %w", err)
		}
		if err := tx.Commit(ctx); err != nil {
			return auth.User{}, time.Time{}, fmt.Errorf("commit refresh family revocation: %w", err)
		}
		if !active {
			return u, time.Time{}, auth.ErrRefreshInvalid
		}
		return u, time.Time{}, auth.ErrRefreshReused
	}
	if _, err := tx.Exec(ctx, `UPDATE refresh_tokens SET used_time = now() WHERE token_hash = $1`, hash); err != nil {
		return auth.User{}, time.Time{}, fmt.Errorf("use refresh token: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO refresh_tokens (token_hash, family_id, user_id, expire_time, family_start_time)
		VALUES ($1, $2, $3, $4, $5)`, next.Hash, family, userID, next.ExpireTime, familyStart); err != nil {
		return auth.User{}, time.Time{}, fmt.Errorf("insert rotated refresh token: %w", err)
	}
	if err := appendRecord(ctx, tx, rec); err != nil {
		return auth.User{}, time.Time{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return auth.User{}, time.Time{}, fmt.Errorf("commit refresh: %w", err)
	}
	return u, familyStart, nil
}

// RevokeRefreshFamily implements auth.Store.
func (s *Store) RevokeRefreshFamily(ctx context.Context, hash []byte, rec *auth.AuditEntry) (auth.User, error) {
	var u auth.User
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `WITH fam AS (SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = $1),
			rev AS (UPDATE refresh_tokens SET revoke_time = now() WHERE family_id IN (SELECT family_id FROM fam) AND revoke_time IS NULL)
			SELECT u.id::text, coalesce(u.tenant_id::text, '') FROM users u JOIN fam ON fam.user_id = u.id`, hash).Scan(&u.ID, &u.TenantID)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			u = auth.User{}
			return nil // unknown token: nothing changed, nothing to record
		case err != nil:
			return fmt.Errorf("revoke refresh family: %w", err)
		}
		return appendRecord(ctx, tx, rec)
	})
	return u, err
}

// RevokeUserSessions implements auth.Store: the user's refresh tokens and, through the token
// epoch, its access tokens, in one transaction.
func (s *Store) RevokeUserSessions(ctx context.Context, userID string, rec *auth.AuditEntry) (int64, error) {
	var n int64
	err := s.inTx(ctx, rec, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE refresh_tokens SET revoke_time = now()
			WHERE user_id = $1 AND revoke_time IS NULL AND used_time IS NULL AND expire_time > now()`, userID)
		if err != nil {
			return fmt.Errorf("revoke user sessions: %w", err)
		}
		n = tag.RowsAffected()
		// Used tokens of the same families are dead already; revoke them too, uncounted.
		if _, err := tx.Exec(ctx, `UPDATE refresh_tokens SET revoke_time = now() WHERE user_id = $1 AND revoke_time IS NULL`, userID); err != nil {
			return fmt.Errorf("revoke user sessions: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE users SET `+bumpEpoch+` WHERE id = $1`, userID); err != nil {
			return fmt.Errorf("revoke user access tokens: %w", err)
		}
		return nil
	})
	return n, err
}

// PasswordHash implements auth.Store.
func (s *Store) PasswordHash(ctx context.Context, tenantID, userID string) (string, error) {
	var hash string
	err := s.pool.QueryRow(ctx, `SELECT password_hash FROM users WHERE tenant_id IS NOT DISTINCT FROM $1 AND id = $2`,
		tenantArg(tenantID), userID).Scan(&hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", notFoundUser(userID)
	}
	if err != nil {
		return "", fmt.Errorf("read password hash: %w", err)
	}
	return hash, nil
}

// ChangePassword implements auth.Store.
func (s *Store) ChangePassword(ctx context.Context, tenantID, userID, hash string, rec *auth.AuditEntry) error {
	return s.inTx(ctx, rec, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE users SET password_hash = $3, update_time = now(), `+bumpEpoch+`
			WHERE tenant_id IS NOT DISTINCT FROM $1 AND id = $2`, tenantArg(tenantID), userID, hash)
		if err != nil {
			return fmt.Errorf("change password: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return notFoundUser(userID)
		}
		if _, err := tx.Exec(ctx, `UPDATE refresh_tokens SET revoke_time = now() WHERE user_id = $1 AND revoke_time IS NULL`, userID); err != nil {
			return fmt.Errorf("revoke sessions after password change: %w", err)
		}
		return nil
	})
}

// ListRevocations implements auth.Store.
func (s *Store) ListRevocations(ctx context.Context, since time.Time) ([]auth.Revocation, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT 'user', id::text, token_epoch, token_epoch_time FROM users WHERE token_epoch_time > $1
		UNION ALL SELECT 'tenant', id::text, token_epoch, token_epoch_time FROM tenants WHERE token_epoch_time > $1
		UNION ALL SELECT 'api_key', id::text, 0, revoke_time FROM api_keys WHERE revoke_time > $1`, since)
	if err != nil {
		return nil, fmt.Errorf("list revocations: %w", err)
	}
	rs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (auth.Revocation, error) {
		var r auth.Revocation
		err := row.Scan(&r.Kind, &r.ID, &r.Epoch, &r.Time)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("list revocations: %w", err)
	}
	return rs, nil
}

// TokenEpochs implements auth.Store.
func (s *Store) TokenEpochs(ctx context.Context, userID string) (int64, int64, error) {
	var user, tenant int64
	err := s.pool.QueryRow(ctx, `SELECT u.token_epoch, coalesce(t.token_epoch, 0)
		FROM users u LEFT JOIN tenants t ON t.id = u.tenant_id WHERE u.id = $1`, userID).Scan(&user, &tenant)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, notFoundUser(userID)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read token epochs: %w", err)
	}
	return user, tenant, nil
}
