package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

// matchesEmails is the condition "the row's email is one of $2", compared as login compares
// (lower on both sides). The tenant is $1: a uuid, never NULL, so no platform operator matches.
const matchesEmails = `tenant_id = $1 AND lower(email) IN (SELECT lower(v) FROM unnest($2::text[]) v)`

// SubjectUsers implements auth.Store.
func (s *Store) SubjectUsers(ctx context.Context, tenantID string, emails []string) ([]auth.User, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userCols+` FROM users WHERE `+matchesEmails+` ORDER BY create_time, id`, tenantID, emails)
	if err != nil {
		return nil, fmt.Errorf("find subject users: %w", err)
	}
	us, err := pgx.CollectRows(rows, scanUser)
	if err != nil {
		return nil, fmt.Errorf("find subject users: %w", err)
	}
	return us, nil
}

// SubjectInvitations implements auth.Store.
func (s *Store) SubjectInvitations(ctx context.Context, tenantID string, emails []string) ([]auth.Invitation, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+invitationCols+` FROM invitations WHERE `+matchesEmails+` ORDER BY create_time, id`, tenantID, emails)
	if err != nil {
		return nil, fmt.Errorf("find subject invitations: %w", err)
	}
	is, err := pgx.CollectRows(rows, scanInvitation)
	if err != nil {
		return nil, fmt.Errorf("find subject invitations: %w", err)
	}
	return is, nil
}

// SubjectSessions implements auth.Store: a family's times are its login (the family's start),
// its last refresh, its latest expiry, and its revocation once no token of it is left unrevoked.
func (s *Store) SubjectSessions(ctx context.Context, userID, afterFamily string, limit int) ([]auth.Session, error) {
	if afterFamily == "" {
		afterFamily = "00000000-0000-0000-0000-000000000000"
	}
	rows, err := s.pool.Query(ctx, `SELECT family_id::text, min(family_start_time), max(used_time), max(expire_time),
			CASE WHEN bool_and(revoke_time IS NOT NULL) THEN max(revoke_time) END
		FROM refresh_tokens WHERE user_id = $1 AND family_id > $2::uuid
		GROUP BY family_id ORDER BY family_id LIMIT $3`, userID, afterFamily, limit)
	if err != nil {
		return nil, fmt.Errorf("list subject sessions: %w", err)
	}
	ss, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (auth.Session, error) {
		var se auth.Session
		err := row.Scan(&se.FamilyID, &se.CreateTime, &se.LastUsedTime, &se.ExpireTime, &se.RevokeTime)
		return se, err
	})
	if err != nil {
		return nil, fmt.Errorf("list subject sessions: %w", err)
	}
	return ss, nil
}

// SubjectAPIKeys implements auth.Store.
func (s *Store) SubjectAPIKeys(ctx context.Context, tenantID, creator string, p auth.Page) ([]auth.APIKey, error) {
	after := p.After
	if after == nil {
		after = &auth.Cursor{ID: "00000000-0000-0000-0000-000000000000"}
	}
	rows, err := s.pool.Query(ctx, `SELECT `+apiKeyCols+` FROM api_keys
		WHERE tenant_id = $1 AND creator = $2 AND (create_time, id) > ($3, $4::uuid) ORDER BY create_time, id LIMIT $5`,
		tenantID, creator, after.CreateTime, after.ID, p.Size)
	if err != nil {
		return nil, fmt.Errorf("list subject api keys: %w", err)
	}
	ks, err := pgx.CollectRows(rows, scanAPIKey)
	if err != nil {
		return nil, fmt.Errorf("list subject api keys: %w", err)
	}
	return ks, nil
}

// EraseSubject implements auth.Store. Concurrent calls of the same erasure are safe: the second
// waits for the first one's row locks (users, invitations, the erasure's row), then finds nothing
// left to erase and adds nothing. The audit record, when there is one, is appended last (see the
// lock order in audit.go).
func (s *Store) EraseSubject(ctx context.Context, spec auth.ErasureSpec, rec *auth.AuditEntry) (auth.Erasure, error) {
	var out auth.Erasure
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		counts, userIDs, err := eraseRows(ctx, tx, spec)
		if err != nil {
			return err
		}
		// xmax = 0 tells a row this statement inserted from one it updated: a concurrent call of
		// the same erasure waits for the first one's row and then updates it.
		var started bool
		if err := tx.QueryRow(ctx, `INSERT INTO erasures (tenant_id, dsr_request, user_ids, users, sessions, api_keys, invitations,
				email_salt, email_hashes)
			VALUES ($1, $2, $3::uuid[], $4, $5, $6, $7, $8,
				ARRAY(SELECT DISTINCT sha256($8 || convert_to(lower(v), 'UTF8')) FROM unnest($9::text[]) v))
			ON CONFLICT (tenant_id, dsr_request) DO UPDATE SET
				user_ids = ARRAY(SELECT DISTINCT unnest(erasures.user_ids || excluded.user_ids)),
				users = erasures.users + excluded.users, sessions = erasures.sessions + excluded.sessions,
				api_keys = erasures.api_keys + excluded.api_keys, invitations = erasures.invitations + excluded.invitations,
				email_hashes = ARRAY(SELECT DISTINCT unnest(erasures.email_hashes ||
					ARRAY(SELECT sha256(erasures.email_salt || convert_to(lower(v), 'UTF8')) FROM unnest($9::text[]) v))),
				update_time = now()
			RETURNING xmax = 0`,
			spec.TenantID, spec.DSRRequest, userIDs, counts.Users, counts.Sessions, counts.APIKeys, counts.Invitations,
			spec.Salt, spec.Emails).Scan(&started); err != nil {
			return fmt.Errorf("record erasure: %w", err)
		}
		if out, err = readErasure(ctx, tx, spec.TenantID, spec.DSRRequest); err != nil {
			return err
		}
		if !started && counts == (auth.ErasureCounts{}) {
			return nil // a repeat that changed nothing: the first call's record stands
		}
		return appendRecord(ctx, tx, rec)
	})
	return out, err
}

// eraseRows pseudonymizes the users and invitations of spec, revokes the users' sessions and API
// keys (raising their token epochs), and forgets the login throttling of their accounts. It
// returns what it changed and the ids of the users.
func eraseRows(ctx context.Context, tx pgx.Tx, spec auth.ErasureSpec) (auth.ErasureCounts, []string, error) {
	var c auth.ErasureCounts
	rows, err := tx.Query(ctx, `SELECT id::text FROM users WHERE `+matchesEmails+` ORDER BY id FOR UPDATE`, spec.TenantID, spec.Emails)
	if err != nil {
		return c, nil, fmt.Errorf("find users to erase: %w", err)
	}
	userIDs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return c, nil, fmt.Errorf("find users to erase: %w", err)
	}
	rows, err = tx.Query(ctx, `SELECT id::text FROM invitations WHERE `+matchesEmails+` ORDER BY id FOR UPDATE`, spec.TenantID, spec.Emails)
	if err != nil {
		return c, nil, fmt.Errorf("find invitations to erase: %w", err)
	}
	invIDs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return c, nil, fmt.Errorf("find invitations to erase: %w", err)
	}
	// The throttle's keys name the account by tenant slug and email (auth.accountKey).
	for _, table := range []string{"login_failures WHERE key", "login_known_addresses WHERE account"} {
		if _, err := tx.Exec(ctx, `DELETE FROM `+table+` IN (SELECT 'account:' || t.slug || '/' || lower(v)
			FROM tenants t, unnest($2::text[]) v WHERE t.id = $1)`, spec.TenantID, spec.Emails); err != nil {
			return c, nil, fmt.Errorf("forget login throttling of erased accounts: %w", err)
		}
	}
	for _, id := range userIDs {
		if _, err := tx.Exec(ctx, `UPDATE users SET email = $2, display_name = $3, password_hash = $4, state = 'disabled',
			update_time = now(), `+bumpEpoch+` WHERE id = $1`, id, spec.Pseudonym(id), spec.DisplayName, spec.PasswordHash); err != nil {
			return c, nil, fmt.Errorf("pseudonymize user: %w", err)
		}
	}
	c.Users = int64(len(userIDs))
	if len(userIDs) > 0 {
		// As RevokeUserSessions counts: live sessions; the used tokens of their families go too.
		tag, err := tx.Exec(ctx, `UPDATE refresh_tokens SET revoke_time = now()
			WHERE user_id = ANY($1::uuid[]) AND revoke_time IS NULL AND used_time IS NULL AND expire_time > now()`, userIDs)
		if err != nil {
			return c, nil, fmt.Errorf("revoke erased users' sessions: %w", err)
		}
		c.Sessions = tag.RowsAffected()
		if _, err := tx.Exec(ctx, `UPDATE refresh_tokens SET revoke_time = now() WHERE user_id = ANY($1::uuid[]) AND revoke_time IS NULL`, userIDs); err != nil {
			return c, nil, fmt.Errorf("revoke erased users' sessions: %w", err)
		}
		tag, err = tx.Exec(ctx, `UPDATE api_keys SET revoke_time = now()
			WHERE tenant_id = $1 AND creator = ANY($2::uuid[]) AND revoke_time IS NULL`, spec.TenantID, userIDs)
		if err != nil {
			return c, nil, fmt.Errorf("revoke erased users' api keys: %w", err)
		}
		c.APIKeys = tag.RowsAffected()
	}
	for _, id := range invIDs {
		// A pending invitation is revoked, so it cannot bring the account back.
		if _, err := tx.Exec(ctx, `UPDATE invitations SET email = $2,
			revoke_time = CASE WHEN state = 'pending' THEN now() ELSE revoke_time END,
			state = CASE WHEN state = 'pending' THEN 'revoked' ELSE state END
			WHERE id = $1`, id, spec.Pseudonym(id)); err != nil {
			return c, nil, fmt.Errorf("pseudonymize invitation: %w", err)
		}
	}
	c.Invitations = int64(len(invIDs))
	if userIDs == nil {
		userIDs = []string{}
	}
	return c, userIDs, nil
}

// GetErasure implements auth.Store.
func (s *Store) GetErasure(ctx context.Context, tenantID, dsrRequest string) (auth.Erasure, error) {
	return readErasure(ctx, s.pool, tenantID, dsrRequest)
}

type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// readErasure reads an erasure and verifies it against the tables: what remains is every user
// or invitation of the tenant whose email hashes to one of the erasure's, and every unrevoked
// session or API key, or enabled account, of the users it erased.
func readErasure(ctx context.Context, q rowQuerier, tenantID, dsrRequest string) (auth.Erasure, error) {
	e := auth.Erasure{TenantID: tenantID, DSRRequest: dsrRequest}
	err := q.QueryRow(ctx, `SELECT e.users, e.sessions, e.api_keys, e.invitations,
			(SELECT count(*) FROM users u WHERE u.tenant_id = e.tenant_id
				AND sha256(e.email_salt || convert_to(lower(u.email), 'UTF8')) = ANY(e.email_hashes))
			+ (SELECT count(*) FROM invitations i WHERE i.tenant_id = e.tenant_id
				AND sha256(e.email_salt || convert_to(lower(i.email), 'UTF8')) = ANY(e.email_hashes))
			+ (SELECT count(*) FROM users u WHERE u.id = ANY(e.user_ids) AND u.state <> 'disabled')
			+ (SELECT count(*) FROM refresh_tokens r WHERE r.user_id = ANY(e.user_ids) AND r.revoke_time IS NULL)
			+ (SELECT count(*) FROM api_keys k WHERE k.tenant_id = e.tenant_id AND k.creator = ANY(e.user_ids) AND k.revoke_time IS NULL)
		FROM erasures e WHERE e.tenant_id = $1 AND e.dsr_request = $2`, tenantID, dsrRequest).
		Scan(&e.Counts.Users, &e.Counts.Sessions, &e.Counts.APIKeys, &e.Counts.Invitations, &e.Remaining)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.Erasure{}, apperr.NotFoundf("erasure %s", dsrRequest)
	}
	if err != nil {
		return auth.Erasure{}, fmt.Errorf("read erasure: %w", err)
	}
	return e, nil
}
