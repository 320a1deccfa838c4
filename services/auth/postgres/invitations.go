package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

const invitationCols = `id::text, tenant_id::text, email, role, state, creator::text, create_time, expire_time,
	accept_time, revoke_time, coalesce(user_id::text, '')`

func scanInvitation(row pgx.CollectableRow) (auth.Invitation, error) {
	var i auth.Invitation
	err := row.Scan(&i.ID, &i.TenantID, &i.Email, &i.Role, &i.State, &i.Creator, &i.CreateTime, &i.ExpireTime,
		&i.AcceptTime, &i.RevokeTime, &i.UserID)
	return i, err
}

func oneInvitation(rows pgx.Rows, err error, id string) (auth.Invitation, error) {
	if err != nil {
		return auth.Invitation{}, fmt.Errorf("query invitation: %w", err)
	}
	i, err := pgx.CollectExactlyOneRow(rows, scanInvitation)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.Invitation{}, apperr.NotFoundf("invitation %s", id)
	}
	if err != nil {
		return auth.Invitation{}, fmt.Errorf("read invitation: %w", err)
	}
	return i, nil
}

// CreateInvitation implements auth.Store. An email that already belongs to a user of the tenant
// is refused: accepting could only fail.
func (s *Store) CreateInvitation(ctx context.Context, inv auth.Invitation, tokenHash []byte, rec *auth.AuditEntry) (auth.Invitation, error) {
	var out auth.Invitation
	err := s.inTx(ctx, rec, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE tenant_id = $1 AND lower(email) = lower($2))`,
			inv.TenantID, inv.Email).Scan(&exists); err != nil {
			return fmt.Errorf("check invitee: %w", err)
		}
		if exists {
			return apperr.New(apperr.AlreadyExists, "USER_EXISTS", "a user with email %q exists", inv.Email)
		}
		rows, err := tx.Query(ctx, `INSERT INTO invitations (id, tenant_id, email, role, state, token_hash, creator, expire_time)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING `+invitationCols,
			inv.ID, inv.TenantID, inv.Email, inv.Role, inv.State, tokenHash, inv.Creator, inv.ExpireTime)
		out, err = oneInvitation(rows, err, inv.ID)
		return err
	})
	return out, err
}

// ListInvitations implements auth.Store.
func (s *Store) ListInvitations(ctx context.Context, tenantID string, p auth.Page) ([]auth.Invitation, error) {
	after := p.After
	if after == nil {
		after = &auth.Cursor{ID: "00000000-0000-0000-0000-000000000000"}
	}
	rows, err := s.pool.Query(ctx, `SELECT `+invitationCols+` FROM invitations
		WHERE tenant_id = $1 AND (create_time, id) > ($2, $3::uuid) ORDER BY create_time, id LIMIT $4`,
		tenantArg(tenantID), after.CreateTime, after.ID, p.Size)
	if err != nil {
		return nil, fmt.Errorf("list invitations: %w", err)
	}
	is, err := pgx.CollectRows(rows, scanInvitation)
	if err != nil {
		return nil, fmt.Errorf("list invitations: %w", err)
	}
	return is, nil
}

// RevokeInvitation implements auth.Store.
func (s *Store) RevokeInvitation(ctx context.Context, tenantID, id string, rec *auth.AuditEntry) (auth.Invitation, error) {
	var inv auth.Invitation
	err := s.inTx(ctx, rec, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE invitations SET state = 'revoked', revoke_time = coalesce(revoke_time, now())
			WHERE tenant_id = $1 AND id = $2 AND state <> 'accepted' RETURNING `+invitationCols, tenantArg(tenantID), id)
		inv, err = oneInvitation(rows, err, id)
		return err
	})
	if !apperr.HasCode(err, apperr.NotFound) {
		return inv, err
	}
	var accepted bool
	switch qerr := s.pool.QueryRow(ctx, `SELECT state = 'accepted' FROM invitations WHERE tenant_id = $1 AND id = $2`,
		tenantArg(tenantID), id).Scan(&accepted); {
	case errors.Is(qerr, pgx.ErrNoRows):
		return auth.Invitation{}, err
	case qerr != nil:
		return auth.Invitation{}, fmt.Errorf("read invitation: %w", qerr)
	case accepted:
		return auth.Invitation{}, apperr.New(apperr.FailedPrecondition, "INVITATION_ACCEPTED", "invitation %s was accepted: disable its user instead", id)
	}
	return auth.Invitation{}, err
}

// InvitationForAccept implements auth.Store.
func (s *Store) InvitationForAccept(ctx context.Context, id string) (auth.Invitation, []byte, error) {
	var hash []byte
	var i auth.Invitation
	err := s.pool.QueryRow(ctx, `SELECT `+invitationCols+`, token_hash FROM invitations WHERE id = $1`, id).
		Scan(&i.ID, &i.TenantID, &i.Email, &i.Role, &i.State, &i.Creator, &i.CreateTime, &i.ExpireTime,
			&i.AcceptTime, &i.RevokeTime, &i.UserID, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.Invitation{}, nil, apperr.NotFoundf("invitation %s", id)
	}
	if err != nil {
		return auth.Invitation{}, nil, fmt.Errorf("read invitation: %w", err)
	}
	return i, hash, nil
}

// AcceptInvitation implements auth.Store. The invitation is claimed first (a row lock held to
// the commit), so of two concurrent accepts one creates the user and the other finds the
// invitation used; a user that cannot be created (email taken) rolls the claim back.
func (s *Store) AcceptInvitation(ctx context.Context, id string, u auth.User, passwordHash string, rec *auth.AuditEntry) (auth.User, error) {
	var out auth.User
	err := s.inTx(ctx, rec, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE invitations SET state = 'accepted', accept_time = now()
			WHERE id = $1 AND tenant_id = $2 AND state = 'pending' AND expire_time > now()`, id, u.TenantID)
		if err != nil {
			return fmt.Errorf("claim invitation: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return invitationNotPending(ctx, tx, id)
		}
		if out, err = createUser(ctx, tx, u, passwordHash); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE invitations SET user_id = $2 WHERE id = $1`, id, out.ID); err != nil {
			return fmt.Errorf("link invitation to user: %w", err)
		}
		return nil
	})
	return out, err
}

// invitationNotPending explains why a claim of invitation id matched no row.
func invitationNotPending(ctx context.Context, tx pgx.Tx, id string) error {
	var state auth.InvitationState
	err := tx.QueryRow(ctx, `SELECT state FROM invitations WHERE id = $1`, id).Scan(&state)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return auth.ErrInvitationInvalid
	case err != nil:
		return fmt.Errorf("read invitation: %w", err)
	}
	switch state {
	case auth.InvitationAccepted:
		return auth.ErrInvitationUsed
	case auth.InvitationPending:
		return auth.ErrInvitationExpired
	}
	return auth.ErrInvitationInvalid
}
