// Package postgres is the auth service's PostgreSQL store.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store implements auth.Store.
type Store struct{ pool *pgxpool.Pool }

var _ auth.Store = (*Store)(nil)

// Open connects to the database at url and applies the migrations.
func Open(ctx context.Context, url string) (*Store, error) {
	pool, err := pgdb.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	sub, _ := fs.Sub(migrations, "migrations")
	if err := pgdb.Migrate(ctx, pool, sub); err != nil {
		pool.Close()
		return nil, err
	}
	return &Store{pool: pool}, nil
}

// Close closes the connection pool.
func (s *Store) Close() { s.pool.Close() }

// Pool exposes the pool to tests that need to inspect or tamper with rows.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// bumpEpoch is the SET clause that revokes every access token issued before (see
// ListRevocations): tenants and users alike.
const bumpEpoch = `token_epoch = token_epoch + 1, token_epoch_time = now()`

const tenantCols = `id::text, slug, display_name, state, create_time, update_time`

func scanTenant(row pgx.CollectableRow) (auth.Tenant, error) {
	var t auth.Tenant
	err := row.Scan(&t.ID, &t.Slug, &t.DisplayName, &t.State, &t.CreateTime, &t.UpdateTime)
	return t, err
}

func oneTenant(rows pgx.Rows, err error, id string) (auth.Tenant, error) {
	if err != nil {
		return auth.Tenant{}, fmt.Errorf("query tenant: %w", err)
	}
	t, err := pgx.CollectExactlyOneRow(rows, scanTenant)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.Tenant{}, apperr.NotFoundf("tenant %s", id)
	}
	if err != nil {
		return auth.Tenant{}, fmt.Errorf("read tenant: %w", err)
	}
	return t, nil
}

// CreateTenant implements auth.Store.
func (s *Store) CreateTenant(ctx context.Context, t auth.Tenant, rec *auth.AuditEntry) (auth.Tenant, error) {
	var out auth.Tenant
	err := s.inTx(ctx, rec, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `INSERT INTO tenants (id, slug, display_name, state) VALUES (coalesce($1::uuid, gen_random_uuid()), $2, $3, $4)
			RETURNING `+tenantCols, idArg(t.ID), t.Slug, t.DisplayName, t.State)
		out, err = oneTenant(rows, err, t.Slug)
		return err
	})
	if isUniqueViolation(err) {
		return auth.Tenant{}, apperr.New(apperr.AlreadyExists, "TENANT_EXISTS", "a tenant with slug %q exists", t.Slug)
	}
	return out, err
}

// idArg maps an id the domain left empty to SQL NULL, so the table's default makes one.
func idArg(id string) any {
	if id == "" {
		return nil
	}
	return id
}

// inTx runs change in a transaction and appends rec (the change's audit record, or nil) after
// it, in the same transaction.
func (s *Store) inTx(ctx context.Context, rec *auth.AuditEntry, change func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := change(tx); err != nil {
			return err
		}
		return appendRecord(ctx, tx, rec)
	})
}

// GetTenant implements auth.Store.
func (s *Store) GetTenant(ctx context.Context, id string) (auth.Tenant, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tenantCols+` FROM tenants WHERE id = $1`, id)
	return oneTenant(rows, err, id)
}

// GetTenantBySlug implements auth.Store.
func (s *Store) GetTenantBySlug(ctx context.Context, slug string) (auth.Tenant, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tenantCols+` FROM tenants WHERE slug = $1`, slug)
	return oneTenant(rows, err, slug)
}

// ListTenants implements auth.Store.
func (s *Store) ListTenants(ctx context.Context, p auth.Page) ([]auth.Tenant, error) {
	after := p.After
	if after == nil {
		after = &auth.Cursor{ID: "00000000-0000-0000-0000-000000000000"}
	}
	rows, err := s.pool.Query(ctx, `SELECT `+tenantCols+` FROM tenants
		WHERE (create_time, id) > ($1, $2::uuid) ORDER BY create_time, id LIMIT $3`, after.CreateTime, after.ID, p.Size)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	ts, err := pgx.CollectRows(rows, scanTenant)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return ts, nil
}

// SetTenantState implements auth.Store.
func (s *Store) SetTenantState(ctx context.Context, id string, state auth.TenantState, rec *auth.AuditEntry) (auth.Tenant, error) {
	var out auth.Tenant
	err := s.inTx(ctx, rec, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE tenants SET state = $2,
			update_time = CASE WHEN state = $2 THEN update_time ELSE now() END,
			`+bumpEpoch+`
			WHERE id = $1 RETURNING `+tenantCols, id, state)
		out, err = oneTenant(rows, err, id)
		return err
	})
	return out, err
}

// userCols ends with the token epochs of the user and of its tenant (0 for operators).
const userCols = `id::text, coalesce(tenant_id::text, ''), email, display_name, role, state, create_time, update_time,
	token_epoch, coalesce((SELECT te.token_epoch FROM tenants te WHERE te.id = users.tenant_id), 0)`

// userColsU is userCols for the alias u.
const userColsU = `u.id::text, coalesce(u.tenant_id::text, ''), u.email, u.display_name, u.role, u.state, u.create_time, u.update_time,
	u.token_epoch, coalesce((SELECT te.token_epoch FROM tenants te WHERE te.id = u.tenant_id), 0)`

func scanUser(row pgx.CollectableRow) (auth.User, error) {
	var u auth.User
	err := row.Scan(&u.ID, &u.TenantID, &u.Email, &u.DisplayName, &u.Role, &u.State, &u.CreateTime, &u.UpdateTime,
		&u.TokenEpoch, &u.TenantTokenEpoch)
	return u, err
}

func oneUser(rows pgx.Rows, err error, id string) (auth.User, error) {
	if err != nil {
		return auth.User{}, fmt.Errorf("query user: %w", err)
	}
	u, err := pgx.CollectExactlyOneRow(rows, scanUser)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.User{}, apperr.NotFoundf("user %s", id)
	}
	if err != nil {
		return auth.User{}, fmt.Errorf("read user: %w", err)
	}
	return u, nil
}

// tenantArg maps the domain's "" (platform) to SQL NULL.
func tenantArg(tenantID string) any {
	if tenantID == "" {
		return nil
	}
	return tenantID
}

// CreateUser implements auth.Store.
func (s *Store) CreateUser(ctx context.Context, u auth.User, hash string, rec *auth.AuditEntry) (auth.User, error) {
	var out auth.User
	err := s.inTx(ctx, rec, func(tx pgx.Tx) error {
		var err error
		out, err = createUser(ctx, tx, u, hash)
		return err
	})
	return out, err
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func createUser(ctx context.Context, q querier, u auth.User, hash string) (auth.User, error) {
	rows, err := q.Query(ctx, `INSERT INTO users (id, tenant_id, email, display_name, role, state, password_hash)
		VALUES (coalesce($1::uuid, gen_random_uuid()), $2, $3, $4, $5, $6, $7) RETURNING `+userCols,
		idArg(u.ID), tenantArg(u.TenantID), u.Email, u.DisplayName, u.Role, u.State, hash)
	out, err := oneUser(rows, err, u.Email)
	if isUniqueViolation(err) {
		return auth.User{}, apperr.New(apperr.AlreadyExists, "USER_EXISTS", "a user with email %q exists", u.Email)
	}
	return out, err
}

// GetUser implements auth.Store.
func (s *Store) GetUser(ctx context.Context, tenantID, id string) (auth.User, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userCols+` FROM users WHERE tenant_id IS NOT DISTINCT FROM $1 AND id = $2`, tenantArg(tenantID), id)
	return oneUser(rows, err, id)
}

// ListUsers implements auth.Store.
func (s *Store) ListUsers(ctx context.Context, tenantID string, p auth.Page) ([]auth.User, error) {
	after := p.After
	if after == nil {
		after = &auth.Cursor{ID: "00000000-0000-0000-0000-000000000000"}
	}
	rows, err := s.pool.Query(ctx, `SELECT `+userCols+` FROM users
		WHERE tenant_id IS NOT DISTINCT FROM $1 AND (create_time, id) > ($2, $3::uuid)
		ORDER BY create_time, id LIMIT $4`, tenantArg(tenantID), after.CreateTime, after.ID, p.Size)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	us, err := pgx.CollectRows(rows, scanUser)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return us, nil
}

// SetUserState implements auth.Store: the state and, for a disabled user, its refresh tokens
// (its access tokens go with the token epoch) in one transaction.
func (s *Store) SetUserState(ctx context.Context, tenantID, id string, state auth.UserState, rec *auth.AuditEntry) (auth.User, error) {
	var out auth.User
	err := s.inTx(ctx, rec, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE users SET state = $3,
			update_time = CASE WHEN state = $3 THEN update_time ELSE now() END,
			`+bumpEpoch+`
			WHERE tenant_id IS NOT DISTINCT FROM $1 AND id = $2 RETURNING `+userCols, tenantArg(tenantID), id, state)
		if out, err = oneUser(rows, err, id); err != nil || state != auth.UserDisabled {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE refresh_tokens SET revoke_time = now() WHERE user_id = $1 AND revoke_time IS NULL`, id); err != nil {
			return fmt.Errorf("revoke sessions of disabled user: %w", err)
		}
		return nil
	})
	return out, err
}

// SetUserRole implements auth.Store.
func (s *Store) SetUserRole(ctx context.Context, tenantID, id string, role rbac.Role, rec *auth.AuditEntry) (auth.User, error) {
	var out auth.User
	err := s.inTx(ctx, rec, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE users SET role = $3,
			update_time = CASE WHEN role = $3 THEN update_time ELSE now() END,
			`+bumpEpoch+`
			WHERE tenant_id IS NOT DISTINCT FROM $1 AND id = $2 AND role <> 'platform_operator' RETURNING `+userCols, tenantArg(tenantID), id, role)
		out, err = oneUser(rows, err, id)
		return err
	})
	return out, err
}

// UserCredentials implements auth.Store.
func (s *Store) UserCredentials(ctx context.Context, tenantID, email string) (auth.User, string, error) {
	var hash string
	var u auth.User
	err := s.pool.QueryRow(ctx, `SELECT `+userCols+`, password_hash FROM users
		WHERE tenant_id IS NOT DISTINCT FROM $1 AND lower(email) = lower($2)`, tenantArg(tenantID), email).
		Scan(&u.ID, &u.TenantID, &u.Email, &u.DisplayName, &u.Role, &u.State, &u.CreateTime, &u.UpdateTime,
			&u.TokenEpoch, &u.TenantTokenEpoch, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.User{}, "", apperr.NotFoundf("user")
	}
	if err != nil {
		return auth.User{}, "", fmt.Errorf("read credentials: %w", err)
	}
	return u, hash, nil
}

// ListSigningKeys implements auth.Store.
func (s *Store) ListSigningKeys(ctx context.Context, retiredSince time.Time) ([]auth.StoredKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT kid, private_key, coalesce(kek_id, ''), create_time, retire_time FROM signing_keys
		WHERE retire_time IS NULL OR retire_time > $1 ORDER BY create_time DESC`, retiredSince)
	return collectSigningKeys(rows, err)
}

// SigningKeysToReseal implements auth.Store.
func (s *Store) SigningKeysToReseal(ctx context.Context, kekID string) ([]auth.StoredKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT kid, private_key, coalesce(kek_id, ''), create_time, retire_time FROM signing_keys
		WHERE kek_id IS DISTINCT FROM $1 ORDER BY create_time`, kekID)
	return collectSigningKeys(rows, err)
}

func collectSigningKeys(rows pgx.Rows, err error) ([]auth.StoredKey, error) {
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (auth.StoredKey, error) {
		var k auth.StoredKey
		err := row.Scan(&k.KID, &k.Sealed, &k.KEKID, &k.CreateTime, &k.RetireTime)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	return keys, nil
}

// ResealSigningKey implements auth.Store.
func (s *Store) ResealSigningKey(ctx context.Context, kid, oldKEK, newKEK string, sealed []byte) error {
	if _, err := s.pool.Exec(ctx, `UPDATE signing_keys SET private_key = $4, kek_id = $3
		WHERE kid = $1 AND kek_id IS NOT DISTINCT FROM nullif($2, '')`, kid, oldKEK, newKEK, sealed); err != nil {
		return fmt.Errorf("reseal signing key: %w", err)
	}
	return nil
}

// InsertSigningKey implements auth.Store.
func (s *Store) InsertSigningKey(ctx context.Context, key auth.StoredKey, rec *auth.AuditEntry) error {
	return s.inTx(ctx, rec, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE signing_keys SET retire_time = clock_timestamp() WHERE retire_time IS NULL`); err != nil {
			return fmt.Errorf("retire signing key: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO signing_keys (kid, private_key, kek_id) VALUES ($1, $2, $3)`, key.KID, key.Sealed, key.KEKID); err != nil {
			return fmt.Errorf("insert signing key: %w", err)
		}
		return nil
	})
}

// bootstrapLock serialises bootstraps of concurrently starting replicas.
const bootstrapLock = 0x636d6573680001

// Bootstrap implements auth.Store.
func (s *Store) Bootstrap(ctx context.Context, b auth.BootstrapAccounts) (bool, error) {
	created := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, bootstrapLock); err != nil {
			return fmt.Errorf("lock bootstrap: %w", err)
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE role = 'platform_operator')`).Scan(&exists); err != nil {
			return fmt.Errorf("check bootstrap: %w", err)
		}
		if exists {
			return nil
		}
		if _, err := createUser(ctx, tx, b.Operator, b.OperatorHash); err != nil {
			return err
		}
		var tenantID string
		if err := tx.QueryRow(ctx, `INSERT INTO tenants (slug, display_name, state) VALUES ($1, $2, $3)
			ON CONFLICT (slug) DO UPDATE SET slug = excluded.slug RETURNING id::text`,
			b.Tenant.Slug, b.Tenant.DisplayName, b.Tenant.State).Scan(&tenantID); err != nil {
			return fmt.Errorf("create bootstrap tenant: %w", err)
		}
		admin := b.Admin
		admin.TenantID = tenantID
		if _, err := createUser(ctx, tx, admin, b.AdminHash); err != nil {
			return err
		}
		created = true
		return nil
	})
	return created, err
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

func notFoundUser(id string) error { return apperr.NotFoundf("user %s", id) }
