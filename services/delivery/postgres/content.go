package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

var _ delivery.ContentStore = (*Store)(nil)

// variantJSON is a variant as stored: a shape of its own, so renaming a Go field never
// changes what is on disk.
type variantJSON struct {
	Name     string `json:"name"`
	Subject  string `json:"subject,omitempty"`
	HTMLBody string `json:"html_body,omitempty"`
	TextBody string `json:"text_body,omitempty"`
	SMSBody  string `json:"sms_body,omitempty"`
}

const contentCols = `tenant_id, campaign_id::text, channel, coalesce(segment_id::text, ''), sender_identity_id::text,
	quiet_start_seconds, quiet_end_seconds, send_at_local_seconds, message_cost_micros, message_cost_currency,
	click_cost_micros, click_cost_currency, no_sms_stop_footer, variants, revision, create_time, update_time`

func scanContent(row pgx.CollectableRow) (delivery.CampaignContent, error) {
	var (
		c                      delivery.CampaignContent
		channel                string
		quietStart, quietEnd   int
		sendAt                 *int
		variants               []byte
		msgCurrency, clickCurr string
		msgMicros, clickMicros int64
	)
	err := row.Scan(&c.TenantID, &c.CampaignID, &channel, &c.SegmentID, &c.SenderIdentityID, &quietStart, &quietEnd, &sendAt,
		&msgMicros, &msgCurrency, &clickMicros, &clickCurr, &c.NoSMSStopFooter, &variants, &c.Revision, &c.CreateTime, &c.UpdateTime)
	if err != nil {
		return c, err
	}
	c.Channel = delivery.Channel(channel)
	c.QuietHours = delivery.QuietHours{Start: time.Duration(quietStart) * time.Second, End: time.Duration(quietEnd) * time.Second}
	if sendAt != nil {
		d := time.Duration(*sendAt) * time.Second
		c.SendAtLocalTime = &d
	}
	c.MessageCost = delivery.Money{Micros: msgMicros, Currency: msgCurrency}
	c.ClickCost = delivery.Money{Micros: clickMicros, Currency: clickCurr}
	var vs []variantJSON
	if err := json.Unmarshal(variants, &vs); err != nil {
		return c, fmt.Errorf("content of campaign %s: stored variants: %w", c.CampaignID, err)
	}
	c.Variants = make([]delivery.VariantContent, 0, len(vs))
	for _, v := range vs {
		c.Variants = append(c.Variants, delivery.VariantContent{Name: v.Name, Subject: v.Subject, HTMLBody: v.HTMLBody, TextBody: v.TextBody, SMSBody: v.SMSBody})
	}
	return c, nil
}

// GetCampaignContent implements delivery.ContentStore.
func (s *Store) GetCampaignContent(ctx context.Context, tenantID, campaignID string) (delivery.CampaignContent, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+contentCols+` FROM campaign_contents WHERE tenant_id = $1 AND campaign_id = $2::uuid`, tenantID, campaignID)
	return oneContent(rows, err, campaignID)
}

func oneContent(rows pgx.Rows, err error, campaignID string) (delivery.CampaignContent, error) {
	if err != nil {
		return delivery.CampaignContent{}, fmt.Errorf("read content of campaign %s: %w", campaignID, err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, scanContent)
	if errors.Is(err, pgx.ErrNoRows) {
		return delivery.CampaignContent{}, apperr.NotFoundf("content of campaign %s", campaignID)
	}
	if err != nil {
		return delivery.CampaignContent{}, fmt.Errorf("read content of campaign %s: %w", campaignID, err)
	}
	return c, nil
}

// ContentRevision implements delivery.ContentStore.
func (s *Store) ContentRevision(ctx context.Context, tenantID, campaignID string) (int64, error) {
	var rev int64
	err := s.pool.QueryRow(ctx, `SELECT revision FROM campaign_contents WHERE tenant_id = $1 AND campaign_id = $2::uuid`, tenantID, campaignID).Scan(&rev)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, apperr.NotFoundf("content of campaign %s", campaignID)
	}
	if err != nil {
		return 0, fmt.Errorf("read content revision of campaign %s: %w", campaignID, err)
	}
	return rev, nil
}

// PutCampaignContent implements delivery.ContentStore. A lock per campaign serializes saves
// (a first save has no row to lock), so two concurrent saves under the same etag cannot both
// succeed.
func (s *Store) PutCampaignContent(ctx context.Context, c delivery.CampaignContent, revision int64, same func(delivery.CampaignContent) bool, rec func() *audit.Record) (delivery.CampaignContent, error) {
	vs := make([]variantJSON, 0, len(c.Variants))
	for _, v := range c.Variants {
		vs = append(vs, variantJSON{Name: v.Name, Subject: v.Subject, HTMLBody: v.HTMLBody, TextBody: v.TextBody, SMSBody: v.SMSBody})
	}
	variants, err := json.Marshal(vs)
	if err != nil {
		return delivery.CampaignContent{}, fmt.Errorf("encode variants: %w", err)
	}
	var sendAt *int
	if c.SendAtLocalTime != nil {
		n := int(*c.SendAtLocalTime / time.Second)
		sendAt = &n
	}
	var out delivery.CampaignContent
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Serializes the first save of a campaign's content, which has no row to lock.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('delivery.content:' || $1 || ':' || $2, 0))`, c.TenantID, c.CampaignID); err != nil {
			return fmt.Errorf("lock content: %w", err)
		}
		rows, err := tx.Query(ctx, `SELECT `+contentCols+` FROM campaign_contents WHERE tenant_id = $1 AND campaign_id = $2::uuid FOR UPDATE`, c.TenantID, c.CampaignID)
		cur, err := oneContent(rows, err, c.CampaignID)
		exists := err == nil
		switch {
		case err != nil && !apperr.HasCode(err, apperr.NotFound):
			return err
		case revision != 0 && (!exists || cur.Revision != revision):
			return apperr.New(apperr.Conflict, "ETAG_MISMATCH", "the content changed since it was read (etag mismatch); read it again")
		case exists && same(cur):
			out = cur
			return nil
		}
		next := cur.Revision + 1
		rows, err = tx.Query(ctx, `INSERT INTO campaign_contents (tenant_id, campaign_id, channel, segment_id, sender_identity_id,
				quiet_start_seconds, quiet_end_seconds, send_at_local_seconds, message_cost_micros, message_cost_currency,
				click_cost_micros, click_cost_currency, no_sms_stop_footer, variants, revision)
			VALUES ($1, $2::uuid, $3, NULLIF($4, '')::uuid, $5::uuid, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb, $15)
			ON CONFLICT (tenant_id, campaign_id) DO UPDATE SET channel = excluded.channel, segment_id = excluded.segment_id,
				sender_identity_id = excluded.sender_identity_id, quiet_start_seconds = excluded.quiet_start_seconds,
				quiet_end_seconds = excluded.quiet_end_seconds, send_at_local_seconds = excluded.send_at_local_seconds,
				message_cost_micros = excluded.message_cost_micros, message_cost_currency = excluded.message_cost_currency,
				click_cost_micros = excluded.click_cost_micros, click_cost_currency = excluded.click_cost_currency,
				no_sms_stop_footer = excluded.no_sms_stop_footer, variants = excluded.variants, revision = excluded.revision,
				update_time = clock_timestamp()
			RETURNING `+contentCols,
			c.TenantID, c.CampaignID, string(c.Channel), c.SegmentID, c.SenderIdentityID,
			int(c.QuietHours.Start/time.Second), int(c.QuietHours.End/time.Second), sendAt,
			c.MessageCost.Micros, c.MessageCost.Currency, c.ClickCost.Micros, c.ClickCost.Currency, c.NoSMSStopFooter, string(variants), next)
		if out, err = oneContent(rows, err, c.CampaignID); err != nil {
			return identityMissing(err)
		}
		return insertRecord(ctx, tx, rec(), "")
	})
	if err != nil {
		return delivery.CampaignContent{}, err
	}
	return out, nil
}

// identityMissing turns the foreign key's refusal (the identity was deleted meanwhile) into
// the domain's answer.
func identityMissing(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" {
		var v apperr.Violations
		v.Add("content.sender_identity_id", "names no sender identity of this tenant")
		return v.Err()
	}
	return err
}

const identityCols = `id::text, tenant_id, channel, from_email, from_name, reply_to, messaging_service_sid, from_number,
	verified, create_time, update_time`

func scanIdentity(row pgx.CollectableRow) (delivery.SenderIdentity, error) {
	var s delivery.SenderIdentity
	var ch string
	err := row.Scan(&s.ID, &s.TenantID, &ch, &s.FromEmail, &s.FromName, &s.ReplyTo, &s.MessagingServiceSID, &s.FromNumber,
		&s.Verified, &s.CreateTime, &s.UpdateTime)
	s.Channel = delivery.Channel(ch)
	return s, err
}

func oneIdentity(rows pgx.Rows, err error, id string) (delivery.SenderIdentity, error) {
	if err != nil {
		return delivery.SenderIdentity{}, fmt.Errorf("sender identity %s: %w", id, err)
	}
	s, err := pgx.CollectExactlyOneRow(rows, scanIdentity)
	if errors.Is(err, pgx.ErrNoRows) {
		return delivery.SenderIdentity{}, apperr.NotFoundf("sender identity %s", id)
	}
	if err != nil {
		return delivery.SenderIdentity{}, fmt.Errorf("sender identity %s: %w", id, err)
	}
	return s, nil
}

// CreateSenderIdentity implements delivery.ContentStore.
func (s *Store) CreateSenderIdentity(ctx context.Context, si delivery.SenderIdentity, max int, rec *audit.Record) (delivery.SenderIdentity, error) {
	var out delivery.SenderIdentity
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Serializes the count and the insert per tenant.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('delivery.sender_identities:' || $1, 0))`, si.TenantID); err != nil {
			return fmt.Errorf("lock sender identities: %w", err)
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM sender_identities WHERE tenant_id = $1`, si.TenantID).Scan(&n); err != nil {
			return fmt.Errorf("count sender identities: %w", err)
		}
		if n >= max {
			return apperr.New(apperr.ResourceExhausted, "SENDER_IDENTITY_LIMIT", "a tenant has at most %d sender identities", max)
		}
		rows, err := tx.Query(ctx, `INSERT INTO sender_identities (tenant_id, channel, from_email, from_name, reply_to, messaging_service_sid, from_number)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING `+identityCols,
			si.TenantID, string(si.Channel), si.FromEmail, si.FromName, si.ReplyTo, si.MessagingServiceSID, si.FromNumber)
		if out, err = oneIdentity(rows, err, "(new)"); err != nil {
			return err
		}
		return insertRecord(ctx, tx, rec, "sender_identities/"+out.ID)
	})
	if err != nil {
		return delivery.SenderIdentity{}, err
	}
	return out, nil
}

// GetSenderIdentity implements delivery.ContentStore.
func (s *Store) GetSenderIdentity(ctx context.Context, tenantID, id string) (delivery.SenderIdentity, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+identityCols+` FROM sender_identities WHERE tenant_id = $1 AND id = $2::uuid`, tenantID, id)
	return oneIdentity(rows, err, id)
}

// ListSenderIdentities implements delivery.ContentStore.
func (s *Store) ListSenderIdentities(ctx context.Context, tenantID string) ([]delivery.SenderIdentity, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+identityCols+` FROM sender_identities WHERE tenant_id = $1 ORDER BY create_time, id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("list sender identities: %w", err)
	}
	out, err := pgx.CollectRows(rows, scanIdentity)
	if err != nil {
		return nil, fmt.Errorf("list sender identities: %w", err)
	}
	return out, nil
}

// VerifySenderIdentity implements delivery.ContentStore.
func (s *Store) VerifySenderIdentity(ctx context.Context, tenantID, id string, rec *audit.Record) (delivery.SenderIdentity, error) {
	var out delivery.SenderIdentity
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE sender_identities SET verified = true,
				update_time = CASE WHEN verified THEN update_time ELSE clock_timestamp() END
			WHERE tenant_id = $1 AND id = $2::uuid RETURNING `+identityCols, tenantID, id)
		if out, err = oneIdentity(rows, err, id); err != nil {
			return err
		}
		return insertRecord(ctx, tx, rec, "")
	})
	if err != nil {
		return delivery.SenderIdentity{}, err
	}
	return out, nil
}

// DeleteSenderIdentity implements delivery.ContentStore.
func (s *Store) DeleteSenderIdentity(ctx context.Context, tenantID, id string, rec *audit.Record) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM sender_identities WHERE tenant_id = $1 AND id = $2::uuid`, tenantID, id)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23503" {
			return apperr.New(apperr.FailedPrecondition, "SENDER_IDENTITY_IN_USE", "a campaign's content uses this sender identity")
		}
		if err != nil {
			return fmt.Errorf("delete sender identity %s: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			return apperr.NotFoundf("sender identity %s", id)
		}
		return insertRecord(ctx, tx, rec, "")
	})
}
