package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// Tracking implements delivery.TrackingStore on the ledger and provider_events tables
// (migrations/00004_tracking.sql).
type Tracking struct{ pool *pgxpool.Pool }

var _ delivery.TrackingStore = (*Tracking)(nil)

// NewTracking returns the tracking store over pool, whose database has the migrations applied.
func NewTracking(pool *pgxpool.Pool) *Tracking { return &Tracking{pool: pool} }

// TrackedRecipient implements delivery.TrackingStore. Refs are ledger ids: anything else is
// NotFound.
func (t *Tracking) TrackedRecipient(ctx context.Context, ref string) (delivery.Recipient, error) {
	id, err := strconv.ParseInt(ref, 10, 64)
	if err != nil || id < 1 {
		return delivery.Recipient{}, apperr.NotFoundf("recipient %s", ref)
	}
	rows, err := t.pool.Query(ctx, `SELECT `+ledgerCols+` FROM ledger WHERE id = $1`, id)
	if err != nil {
		return delivery.Recipient{}, pgdb.Classify(fmt.Errorf("read recipient %d: %w", id, err))
	}
	r, err := pgx.CollectExactlyOneRow(rows, scanRecipient)
	if errors.Is(err, pgx.ErrNoRows) {
		return delivery.Recipient{}, apperr.NotFoundf("recipient %s", ref)
	}
	if err != nil {
		return delivery.Recipient{}, pgdb.Classify(fmt.Errorf("read recipient %d: %w", id, err))
	}
	return r, nil
}

// eventTime is the key's time: Twilio's callbacks have none (the epoch stands in, since the
// key's columns are NOT NULL).
func eventTime(e delivery.ProviderEvent) time.Time {
	if e.Time.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return e.Time.UTC().Truncate(time.Second)
}

// BeginProviderEvent implements delivery.TrackingStore: the key's insert and the ledger row's
// status change commit together, and only the insert that created the key changes the status.
func (t *Tracking) BeginProviderEvent(ctx context.Context, e delivery.ProviderEvent, tenantID, status string) (bool, error) {
	ref, err := strconv.ParseInt(e.Ref, 10, 64)
	if err != nil {
		return false, apperr.NotFoundf("recipient %s", e.Ref)
	}
	var done bool
	err = pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
			INSERT INTO provider_events (provider, message_id, event_type, event_time, tenant_id, ledger_id)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
			string(e.Provider), e.MessageID, e.Type, eventTime(e), tenantID, ref)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return tx.QueryRow(ctx, `
				SELECT finished FROM provider_events
				WHERE provider = $1 AND message_id = $2 AND event_type = $3 AND event_time = $4`,
				string(e.Provider), e.MessageID, e.Type, eventTime(e)).Scan(&done)
		}
		if status == "" {
			return nil
		}
		// An older event arriving late does not overwrite a newer status.
		_, err = tx.Exec(ctx, `
			UPDATE ledger SET delivery_status = $3, delivery_status_time = $4
			WHERE id = $1 AND tenant_id = $2 AND (delivery_status_time IS NULL OR delivery_status_time <= $4)`,
			ref, tenantID, status, eventTime(e))
		return err
	})
	if err != nil {
		return false, pgdb.Classify(fmt.Errorf("record %s event of %s: %w", e.Provider, e.Ref, err))
	}
	return done, nil
}

// FinishProviderEvent implements delivery.TrackingStore.
func (t *Tracking) FinishProviderEvent(ctx context.Context, e delivery.ProviderEvent) error {
	_, err := t.pool.Exec(ctx, `
		UPDATE provider_events SET finished = true
		WHERE provider = $1 AND message_id = $2 AND event_type = $3 AND event_time = $4`,
		string(e.Provider), e.MessageID, e.Type, eventTime(e))
	if err != nil {
		return pgdb.Classify(fmt.Errorf("finish %s event of %s: %w", e.Provider, e.Ref, err))
	}
	return nil
}

// DeliveryStatus returns the delivery status the provider last reported for a ledger row ("" if
// none), for the delivery views and tests.
func (t *Tracking) DeliveryStatus(ctx context.Context, tenantID, ref string) (string, error) {
	id, err := strconv.ParseInt(ref, 10, 64)
	if err != nil {
		return "", apperr.NotFoundf("recipient %s", ref)
	}
	var s string
	err = t.pool.QueryRow(ctx, `SELECT delivery_status FROM ledger WHERE id = $1 AND tenant_id = $2`, id, tenantID).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", apperr.NotFoundf("recipient %s", ref)
	}
	if err != nil {
		return "", pgdb.Classify(fmt.Errorf("read delivery status of %s: %w", ref, err))
	}
	return s, nil
}

// PruneProviderEvents deletes up to limit dedup keys recorded before before and returns how
// many it deleted (call it again while it returns limit).
func (t *Tracking) PruneProviderEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	tag, err := t.pool.Exec(ctx, `
		DELETE FROM provider_events WHERE ctid IN (
			SELECT ctid FROM provider_events WHERE create_time < $1 LIMIT $2)`, before, limit)
	if err != nil {
		return 0, pgdb.Classify(fmt.Errorf("prune provider events: %w", err))
	}
	return int(tag.RowsAffected()), nil
}
