package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

var _ delivery.SubjectStore = (*Store)(nil)

// SubjectDeliveries implements delivery.SubjectStore.
func (s *Store) SubjectDeliveries(ctx context.Context, tenantID string, contactIDs []string, fn func(delivery.SubjectDelivery) error) error {
	rows, err := s.pool.Query(ctx, `SELECT id, campaign_id, contact_id, address, variant, state, attempt, provider_id, reason, create_time, update_time
		FROM ledger WHERE tenant_id = $1 AND contact_id = ANY($2::text[]) ORDER BY id`, tenantID, contactIDs)
	if err != nil {
		return fmt.Errorf("export deliveries: %w", err)
	}
	var d delivery.SubjectDelivery
	_, err = pgx.ForEachRow(rows, []any{&d.ID, &d.CampaignID, &d.ContactID, &d.Address, &d.Variant, &d.State, &d.Attempt,
		&d.ProviderID, &d.Reason, &d.CreateTime, &d.UpdateTime}, func() error { return fn(d) })
	if err != nil {
		return fmt.Errorf("export deliveries: %w", err)
	}
	return nil
}

// EraseSubject implements delivery.SubjectStore.
func (s *Store) EraseSubject(ctx context.Context, tenantID, request string, ids []delivery.Identifier) (delivery.SubjectErasure, error) {
	u, e, p := identifierArgs(ids)
	var out delivery.SubjectErasure
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Under the tenant's contacts lock, as every contacts write: an import or identify
		// running meanwhile cannot re-create a contact between the delete and the record.
		if err := lockTenant(ctx, tx, tenantID); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `DELETE FROM contacts WHERE `+byIdentifiers+` RETURNING id::text`, tenantID, u, e, p)
		if err != nil {
			return err
		}
		erased, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO subject_erasures AS se (tenant_id, dsr_request, contact_ids, contacts)
			VALUES ($1, $2, $3::text[], $4)
			ON CONFLICT (tenant_id, dsr_request) DO UPDATE SET
				contact_ids = ARRAY(SELECT DISTINCT unnest(se.contact_ids || EXCLUDED.contact_ids)),
				contacts = se.contacts + EXCLUDED.contacts, update_time = clock_timestamp()`,
			tenantID, request, erased, len(erased)); err != nil {
			return err
		}
		out, err = continueErasure(ctx, tx, tenantID, request)
		return err
	})
	if err != nil {
		return delivery.SubjectErasure{}, fmt.Errorf("erase subject: %w", err)
	}
	return out, nil
}

// ContinueErasure implements delivery.SubjectStore.
func (s *Store) ContinueErasure(ctx context.Context, tenantID, request string) (delivery.SubjectErasure, error) {
	var out delivery.SubjectErasure
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		out, err = continueErasure(ctx, tx, tenantID, request)
		return err
	})
	var de *apperr.Error
	if errors.As(err, &de) {
		return out, err
	}
	if err != nil {
		return out, fmt.Errorf("continue erasure: %w", err)
	}
	return out, nil
}

// continueErasure skips the pending ledger rows of the request's contacts, blanks the address
// of their settled rows (sending and unknown ones keep it until they settle), and counts what
// remains: contacts of those ids, rows still holding an address.
func continueErasure(ctx context.Context, tx pgx.Tx, tenantID, request string) (delivery.SubjectErasure, error) {
	var out delivery.SubjectErasure
	var ids []string
	err := tx.QueryRow(ctx, `SELECT contact_ids, contacts FROM subject_erasures WHERE tenant_id = $1 AND dsr_request = $2 FOR UPDATE`,
		tenantID, request).Scan(&ids, &out.Contacts)
	if errors.Is(err, pgx.ErrNoRows) {
		return out, apperr.NotFoundf("erasure of request %s", request)
	}
	if err != nil {
		return out, err
	}
	tag, err := tx.Exec(ctx, `UPDATE ledger SET address = '',
			state = CASE WHEN state = 'pending' THEN 'skipped' ELSE state END,
			reason = CASE WHEN state = 'pending' THEN $3 ELSE reason END,
			update_time = clock_timestamp()
		WHERE tenant_id = $1 AND contact_id = ANY($2::text[]) AND address <> '' AND state NOT IN ('sending', 'unknown')`,
		tenantID, ids, string(delivery.SkipErased))
	if err != nil {
		return out, err
	}
	if _, err := tx.Exec(ctx, `UPDATE subject_erasures SET deliveries = deliveries + $3, update_time = clock_timestamp()
		WHERE tenant_id = $1 AND dsr_request = $2`, tenantID, request, tag.RowsAffected()); err != nil {
		return out, err
	}
	err = tx.QueryRow(ctx, `SELECT deliveries,
			(SELECT count(*) FROM contacts WHERE tenant_id = $1 AND id::text = ANY($3::text[]))
			+ (SELECT count(*) FROM ledger WHERE tenant_id = $1 AND contact_id = ANY($3::text[]) AND address <> '')
		FROM subject_erasures WHERE tenant_id = $1 AND dsr_request = $2`, tenantID, request, ids).Scan(&out.Deliveries, &out.Remaining)
	return out, err
}
