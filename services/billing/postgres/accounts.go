package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

var (
	_ billing.AccountStore = (*Store)(nil)
	_ billing.WebhookStore = (*Store)(nil)
	_ billing.GraceStore   = (*Store)(nil)
)

const accountCols = `tenant_id, stripe_customer_id, status, status_reason, flagged_at, suspended_at,
	subscription_status, last_event_at, revision, create_time, update_time`

// SetBillingAccount implements billing.AccountStore. The standing is reset to ok (the
// operator's decision); a new customer also forgets the old one's subscription status and
// event time, which the same customer again keeps (late events still cannot undo newer state).
func (s *Store) SetBillingAccount(ctx context.Context, tenantID, customerID string, rec *audit.Record) (billing.Account, error) {
	var out billing.Account
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `INSERT INTO billing_accounts (tenant_id, stripe_customer_id) VALUES ($1, $2)
			ON CONFLICT (tenant_id) DO UPDATE SET
				stripe_customer_id = EXCLUDED.stripe_customer_id,
				status = 'ok', status_reason = '', flagged_at = NULL, suspended_at = NULL,
				subscription_status = CASE WHEN billing_accounts.stripe_customer_id IS DISTINCT FROM EXCLUDED.stripe_customer_id
					THEN '' ELSE billing_accounts.subscription_status END,
				last_event_at = CASE WHEN billing_accounts.stripe_customer_id IS DISTINCT FROM EXCLUDED.stripe_customer_id
					THEN NULL ELSE billing_accounts.last_event_at END,
				revision = billing_accounts.revision + 1,
				update_time = clock_timestamp()
			RETURNING `+accountCols, tenantID, customerID)
		if out, err = oneAccount(rows, err); err != nil {
			if accountUniqueViolation(err) {
				return apperr.New(apperr.AlreadyExists, "ALREADY_EXISTS", "stripe customer %s is mapped to another tenant", customerID)
			}
			return err
		}
		return insertAccountRecord(ctx, tx, rec)
	})
	return out, pgdb.Classify(err)
}

// GetBillingAccount implements billing.AccountStore.
func (s *Store) GetBillingAccount(ctx context.Context, tenantID string) (billing.Account, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+accountCols+` FROM billing_accounts WHERE tenant_id = $1`, tenantID)
	acc, err := oneAccount(rows, err)
	if errors.Is(err, pgx.ErrNoRows) {
		return billing.Account{}, apperr.NotFoundf("billing account of tenant %s", tenantID)
	}
	return acc, pgdb.Classify(err)
}

// ListBillingAccounts implements billing.AccountStore.
func (s *Store) ListBillingAccounts(ctx context.Context, after string, limit int) ([]billing.Account, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+accountCols+` FROM billing_accounts WHERE tenant_id > $1
		ORDER BY tenant_id LIMIT $2`, after, limit)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("list billing accounts: %w", err))
	}
	accs, err := pgx.CollectRows(rows, scanAccount)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("list billing accounts: %w", err))
	}
	return accs, nil
}

// ApplyStripeEvent implements billing.WebhookStore. The event row is inserted first: a second
// delivery of the same event, even a concurrent one, waits on that row's key until the first
// transaction ends and then finds it (or, if the first rolled back, acts in its place).
func (s *Store) ApplyStripeEvent(ctx context.Context, ev billing.StripeEvent,
	decide func(billing.Account, bool) (billing.Account, bool, *audit.Record, string)) (string, bool, error) {
	var (
		outcome string
		dup     bool
	)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO stripe_events (event_id, type, created, customer_id)
			VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING`, ev.ID, ev.Type, ev.Created, ev.CustomerID)
		if err != nil {
			return fmt.Errorf("record stripe event: %w", err)
		}
		if tag.RowsAffected() == 0 {
			dup = true
			return nil
		}
		rows, err := tx.Query(ctx, `SELECT `+accountCols+` FROM billing_accounts WHERE stripe_customer_id = $1 FOR UPDATE`, ev.CustomerID)
		acc, err := oneAccount(rows, err)
		found := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		next, changed, rec, out := decide(acc, found)
		outcome = out
		if found && changed {
			if _, err := tx.Exec(ctx, `UPDATE billing_accounts SET status = $2, status_reason = $3, flagged_at = $4,
					subscription_status = $5, last_event_at = $6, revision = revision + 1, update_time = clock_timestamp()
				WHERE tenant_id = $1`, acc.TenantID, string(next.Status), next.StatusReason, accountNullTime(next.FlaggedAt),
				next.SubscriptionStatus, accountNullTime(next.LastEventAt)); err != nil {
				return fmt.Errorf("update billing account: %w", err)
			}
			if err := insertAccountRecord(ctx, tx, rec); err != nil {
				return err
			}
		}
		var tenant any
		if found {
			tenant = acc.TenantID
		}
		if _, err := tx.Exec(ctx, `UPDATE stripe_events SET tenant_id = $2, acted = $3, outcome = $4 WHERE event_id = $1`,
			ev.ID, tenant, outcome == billing.WebhookApplied, outcome); err != nil {
			return fmt.Errorf("record stripe event outcome: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", false, pgdb.Classify(err)
	}
	return outcome, dup, nil
}

// OverdueAccounts implements billing.GraceStore.
func (s *Store) OverdueAccounts(ctx context.Context, cutoff time.Time, limit int) ([]billing.Account, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+accountCols+` FROM billing_accounts
		WHERE status = 'flagged' AND flagged_at <= $1 ORDER BY flagged_at, tenant_id LIMIT $2`, cutoff, limit)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("list overdue accounts: %w", err))
	}
	accs, err := pgx.CollectRows(rows, scanAccount)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("list overdue accounts: %w", err))
	}
	return accs, nil
}

// MarkSuspended implements billing.GraceStore.
func (s *Store) MarkSuspended(ctx context.Context, tenantID string, at time.Time, reason string, rec *audit.Record) (bool, error) {
	changed := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE billing_accounts SET status = 'suspended', suspended_at = $2, status_reason = $3,
				revision = revision + 1, update_time = clock_timestamp()
			WHERE tenant_id = $1 AND status <> 'suspended'`, tenantID, at, reason)
		if err != nil {
			return fmt.Errorf("mark account suspended: %w", err)
		}
		if changed = tag.RowsAffected() == 1; !changed {
			return nil
		}
		return insertAccountRecord(ctx, tx, rec)
	})
	return changed, pgdb.Classify(err)
}

func insertAccountRecord(ctx context.Context, tx pgx.Tx, rec *audit.Record) error {
	if rec == nil {
		return nil
	}
	return auditpg.InsertTx(ctx, tx, *rec)
}

func oneAccount(rows pgx.Rows, err error) (billing.Account, error) {
	if err != nil {
		return billing.Account{}, fmt.Errorf("query billing account: %w", err)
	}
	acc, err := pgx.CollectExactlyOneRow(rows, scanAccount)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return billing.Account{}, fmt.Errorf("read billing account: %w", err)
	}
	return acc, err
}

func scanAccount(row pgx.CollectableRow) (billing.Account, error) {
	var (
		a                        billing.Account
		status                   string
		flagged, suspended, last *time.Time
	)
	err := row.Scan(&a.TenantID, &a.StripeCustomerID, &status, &a.StatusReason, &flagged, &suspended,
		&a.SubscriptionStatus, &last, &a.Revision, &a.CreateTime, &a.UpdateTime)
	a.Status = billing.AccountStatus(status)
	if flagged != nil {
		a.FlaggedAt = flagged.UTC()
	}
	if suspended != nil {
		a.SuspendedAt = suspended.UTC()
	}
	if last != nil {
		a.LastEventAt = last.UTC()
	}
	a.CreateTime, a.UpdateTime = a.CreateTime.UTC(), a.UpdateTime.UTC()
	return a, err
}

func accountNullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func accountUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}
