package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

var _ delivery.AudienceStore = (*Store)(nil)

const contactCols = `id::text, tenant_id, coalesce(user_id, ''), coalesce(email, ''), coalesce(phone, ''), attributes,
	time_zone, locale, email_consent, email_consent_source, email_consent_time, sms_consent, sms_consent_source,
	sms_consent_time, suppressed, suppression_reason, revision, create_time, update_time`

func scanContact(row pgx.CollectableRow) (delivery.Contact, error) {
	var (
		c                      delivery.Contact
		attrs                  []byte
		emailState, smsState   string
		emailTime, smsTime     *time.Time
		emailSource, smsSource string
	)
	err := row.Scan(&c.ID, &c.TenantID, &c.UserID, &c.Email, &c.Phone, &attrs, &c.TimeZone, &c.Locale,
		&emailState, &emailSource, &emailTime, &smsState, &smsSource, &smsTime,
		&c.Suppressed, &c.SuppressionReason, &c.Revision, &c.CreateTime, &c.UpdateTime)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(attrs, &c.Attributes); err != nil {
		return c, fmt.Errorf("contact %s: stored attributes: %w", c.ID, err)
	}
	if len(c.Attributes) == 0 {
		c.Attributes = nil
	}
	c.Consent.Email = delivery.Consent{State: delivery.ConsentState(emailState), Source: emailSource}
	c.Consent.SMS = delivery.Consent{State: delivery.ConsentState(smsState), Source: smsSource}
	if emailTime != nil {
		c.Consent.Email.Time = emailTime.UTC()
	}
	if smsTime != nil {
		c.Consent.SMS.Time = smsTime.UTC()
	}
	return c, nil
}

// nullTime stores a zero time as NULL.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func encodeAttributes(attrs map[string]string) (string, error) {
	if attrs == nil {
		attrs = map[string]string{}
	}
	b, err := json.Marshal(attrs)
	if err != nil {
		return "", fmt.Errorf("encode attributes: %w", err)
	}
	return string(b), nil
}

// values are the columns of contactWriteCols, from c.
func contactValues(c delivery.Contact) ([]any, error) {
	attrs, err := encodeAttributes(c.Attributes)
	if err != nil {
		return nil, err
	}
	return []any{c.UserID, c.Email, c.Phone, attrs, c.TimeZone, c.Locale,
		string(c.Consent.Email.State), c.Consent.Email.Source, nullTime(c.Consent.Email.Time),
		string(c.Consent.SMS.State), c.Consent.SMS.Source, nullTime(c.Consent.SMS.Time),
		c.Suppressed, c.SuppressionReason}, nil
}

const contactWriteCols = `user_id, email, phone, attributes, time_zone, locale, email_consent, email_consent_source,
	email_consent_time, sms_consent, sms_consent_source, sms_consent_time, suppressed, suppression_reason`

// contactWriteVals are contactWriteCols' placeholders: empty identifiers become NULL.
const contactWriteVals = `NULLIF($1, ''), NULLIF($2, ''), NULLIF($3, ''), $4::jsonb, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14`

// lockTenant serializes, per tenant, the writes that set identifiers: each checks all three
// unique identifiers before it writes (an upsert matches on any of them), and two concurrent
// writers could otherwise both find nothing and collide on a unique index mid-batch.
func lockTenant(ctx context.Context, tx pgx.Tx, tenantID string) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('delivery.contacts:' || $1, 0))`, tenantID); err != nil {
		return fmt.Errorf("lock tenant contacts: %w", err)
	}
	return nil
}

// uniqueViolation turns a taken identifier into ALREADY_EXISTS naming which.
func uniqueViolation(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		return err
	}
	field := "identifier"
	switch pgErr.ConstraintName {
	case "contacts_tenant_email":
		field = "email"
	case "contacts_tenant_phone":
		field = "phone"
	case "contacts_tenant_user_id":
		field = "user_id"
	case "segments_tenant_id_name_key":
		return apperr.New(apperr.AlreadyExists, "SEGMENT_EXISTS", "a segment with this name exists")
	}
	return apperr.New(apperr.AlreadyExists, "CONTACT_EXISTS", "another contact has this %s", field)
}

func insertRecord(ctx context.Context, tx pgx.Tx, rec *audit.Record, resource string) error {
	if rec == nil {
		return nil
	}
	r := *rec
	if resource != "" {
		r.Resource = resource
	}
	return auditpg.InsertTx(ctx, tx, r)
}

func oneContact(rows pgx.Rows, err error, id string) (delivery.Contact, error) {
	if err != nil {
		return delivery.Contact{}, fmt.Errorf("query contact: %w", err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, scanContact)
	if errors.Is(err, pgx.ErrNoRows) {
		return delivery.Contact{}, apperr.NotFoundf("contact %s", id)
	}
	if err != nil {
		return delivery.Contact{}, uniqueViolation(fmt.Errorf("write contact %s: %w", id, err))
	}
	return c, nil
}

// CreateContact implements delivery.AudienceStore.
func (s *Store) CreateContact(ctx context.Context, c delivery.Contact, rec *audit.Record) (delivery.Contact, error) {
	args, err := contactValues(c)
	if err != nil {
		return delivery.Contact{}, err
	}
	args = append(args, c.TenantID)
	var out delivery.Contact
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockTenant(ctx, tx, c.TenantID); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `INSERT INTO contacts (`+contactWriteCols+`, tenant_id)
			VALUES (`+contactWriteVals+`, $15) RETURNING `+contactCols, args...)
		if out, err = oneContact(rows, err, "new"); err != nil {
			return err
		}
		return insertRecord(ctx, tx, rec, out.ID)
	})
	if err != nil {
		return delivery.Contact{}, err
	}
	return out, nil
}

// GetContact implements delivery.AudienceStore.
func (s *Store) GetContact(ctx context.Context, tenantID, id string) (delivery.Contact, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+contactCols+` FROM contacts WHERE tenant_id = $1 AND id = $2::uuid`, tenantID, id)
	return oneContact(rows, err, id)
}

// ListContacts implements delivery.AudienceStore: keyset pages on (create_time, id), so a
// contact created between two pages never shifts what was already listed.
func (s *Store) ListContacts(ctx context.Context, tenantID string, q delivery.ContactQuery) ([]delivery.Contact, error) {
	args := []any{tenantID, q.Size}
	where := `tenant_id = $1`
	if q.After != nil {
		args = append(args, q.After.CreateTime, q.After.ID)
		where += ` AND (create_time, id) > ($3::timestamptz, $4::uuid)`
	}
	rows, err := s.pool.Query(ctx, `SELECT `+contactCols+` FROM contacts WHERE `+where+` ORDER BY create_time, id LIMIT $2`, args...)
	if err != nil {
		return nil, fmt.Errorf("list contacts: %w", err)
	}
	cs, err := pgx.CollectRows(rows, scanContact)
	if err != nil {
		return nil, fmt.Errorf("list contacts: %w", err)
	}
	return cs, nil
}

// UpdateContact implements delivery.AudienceStore.
func (s *Store) UpdateContact(ctx context.Context, tenantID, id string, change func(*delivery.Contact) error, rec *audit.Record) (delivery.Contact, error) {
	var out delivery.Contact
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockTenant(ctx, tx, tenantID); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT `+contactCols+` FROM contacts WHERE tenant_id = $1 AND id = $2::uuid FOR UPDATE`, tenantID, id)
		c, err := oneContact(rows, err, id)
		if err != nil {
			return err
		}
		if err := change(&c); err != nil {
			return err
		}
		args, err := contactValues(c)
		if err != nil {
			return err
		}
		args = append(args, tenantID, id)
		rows, err = tx.Query(ctx, `UPDATE contacts SET (`+contactWriteCols+`, revision, update_time) =
			(`+contactWriteVals+`, revision + 1, clock_timestamp())
			WHERE tenant_id = $15 AND id = $16::uuid RETURNING `+contactCols, args...)
		if out, err = oneContact(rows, err, id); err != nil {
			return err
		}
		return insertRecord(ctx, tx, rec, "")
	})
	if err != nil {
		return delivery.Contact{}, err
	}
	return out, nil
}

// DeleteContact implements delivery.AudienceStore.
func (s *Store) DeleteContact(ctx context.Context, tenantID, id string, rec *audit.Record) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM contacts WHERE tenant_id = $1 AND id = $2::uuid`, tenantID, id)
		if err != nil {
			return fmt.Errorf("delete contact %s: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			return apperr.NotFoundf("contact %s", id)
		}
		return insertRecord(ctx, tx, rec, "")
	})
}

// upsertSQL applies one upsert. m finds every contact any identifier names, locked; with none
// the row is inserted, with exactly one it is updated if that changes a value (empty values
// keep the stored ones, attributes merge key by key, up to $13 keys), with more nothing changes
// (the identifiers belong to different contacts). The answer tells which: (matches, inserted
// id, updated id, id of the one match within the attribute limit — unchanged when not updated).
// A consent with the stored state and source is no change: its first time is the proof kept.
//
// The three lookups are separate so that each uses its unique index in any plan: the statement
// is prepared once per connection, and a generic plan of one OR over the three columns scans all
// of the tenant's contacts (quadratic over an import).
const upsertSQL = `WITH
m1 AS (SELECT id FROM contacts WHERE tenant_id = $14 AND user_id = NULLIF($1, '') FOR UPDATE),
m2 AS (SELECT id FROM contacts WHERE tenant_id = $14 AND email = NULLIF($2, '') FOR UPDATE),
m3 AS (SELECT id FROM contacts WHERE tenant_id = $14 AND phone = NULLIF($3, '') FOR UPDATE),
m AS (SELECT id FROM m1 UNION SELECT id FROM m2 UNION SELECT id FROM m3),
n AS (SELECT count(*) AS c FROM m),
ins AS (
	INSERT INTO contacts (` + contactWriteCols + `, tenant_id)
	SELECT NULLIF($1, ''), NULLIF($2, ''), NULLIF($3, ''), $4::jsonb, $5, $6,
		COALESCE(NULLIF($7, ''), 'unknown'), $8, $9, COALESCE(NULLIF($10, ''), 'unknown'), $11, $12, false, '', $14
	FROM n WHERE n.c = 0
	RETURNING id
), upd AS (
	UPDATE contacts t SET
		user_id = COALESCE(NULLIF($1, ''), t.user_id),
		email = COALESCE(NULLIF($2, ''), t.email),
		phone = COALESCE(NULLIF($3, ''), t.phone),
		attributes = t.attributes || $4::jsonb,
		time_zone = COALESCE(NULLIF($5, ''), t.time_zone),
		locale = COALESCE(NULLIF($6, ''), t.locale),
		email_consent = COALESCE(NULLIF($7, ''), t.email_consent),
		email_consent_source = CASE WHEN $7 = '' THEN t.email_consent_source ELSE $8 END,
		email_consent_time = CASE WHEN $7 = '' THEN t.email_consent_time ELSE $9 END,
		sms_consent = COALESCE(NULLIF($10, ''), t.sms_consent),
		sms_consent_source = CASE WHEN $10 = '' THEN t.sms_consent_source ELSE $11 END,
		sms_consent_time = CASE WHEN $10 = '' THEN t.sms_consent_time ELSE $12 END,
		revision = t.revision + 1,
		update_time = clock_timestamp()
	FROM n
	WHERE n.c = 1 AND t.id = (SELECT id FROM m LIMIT 1)
		AND (SELECT count(*) FROM jsonb_object_keys(t.attributes || $4::jsonb)) <= $13
		AND (($1 <> '' AND t.user_id IS DISTINCT FROM $1) OR ($2 <> '' AND t.email IS DISTINCT FROM $2)
			OR ($3 <> '' AND t.phone IS DISTINCT FROM $3) OR NOT t.attributes @> $4::jsonb
			OR ($5 <> '' AND t.time_zone <> $5) OR ($6 <> '' AND t.locale <> $6)
			OR ($7 <> '' AND (t.email_consent <> $7 OR t.email_consent_source <> $8))
			OR ($10 <> '' AND (t.sms_consent <> $10 OR t.sms_consent_source <> $11)))
	RETURNING t.id
)
SELECT n.c, (SELECT id::text FROM ins), (SELECT id::text FROM upd),
	(SELECT t.id::text FROM contacts t WHERE n.c = 1 AND t.id = (SELECT id FROM m LIMIT 1)
		AND (SELECT count(*) FROM jsonb_object_keys(t.attributes || $4::jsonb)) <= $13)
FROM n`

// upsertPipeline is the most upserts sent to the server before their answers are read: it
// bounds what one round trip buffers, whatever the caller's batch size.
const upsertPipeline = 500

// UpsertContacts implements delivery.AudienceStore: the upserts go to the server in pipelined
// batches, in one transaction under the tenant's contacts lock, so each sees the ones before
// it (two rows of a file with the same email make one contact).
func (s *Store) UpsertContacts(ctx context.Context, tenantID string, us []delivery.ContactUpsert, now time.Time) ([]delivery.UpsertResult, error) {
	out := make([]delivery.UpsertResult, len(us))
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockTenant(ctx, tx, tenantID); err != nil {
			return err
		}
		for start := 0; start < len(us); start += upsertPipeline {
			end := min(start+upsertPipeline, len(us))
			if err := upsertChunk(ctx, tx, tenantID, us[start:end], now, out[start:end]); err != nil {
				return fmt.Errorf("upsert contacts %d-%d of %d: %w", start+1, end, len(us), err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// upsertChunk sends us in one pipeline and writes their outcomes into out.
func upsertChunk(ctx context.Context, tx pgx.Tx, tenantID string, us []delivery.ContactUpsert, now time.Time, out []delivery.UpsertResult) error {
	consentTime := func(c delivery.Consent) *time.Time {
		if c.State == "" {
			return nil
		}
		if c.Time.IsZero() {
			return &now
		}
		return &c.Time
	}
	b := &pgx.Batch{}
	for _, u := range us {
		attrs, err := encodeAttributes(u.Attributes)
		if err != nil {
			return err
		}
		b.Queue(upsertSQL, u.UserID, u.Email, u.Phone, attrs, u.TimeZone, u.Locale,
			string(u.Consent.Email.State), u.Consent.Email.Source, consentTime(u.Consent.Email),
			string(u.Consent.SMS.State), u.Consent.SMS.Source, consentTime(u.Consent.SMS),
			delivery.MaxAttributes, tenantID)
	}
	br := tx.SendBatch(ctx, b)
	for i := range us {
		var n int64
		var ins, upd, same *string
		if err := br.QueryRow().Scan(&n, &ins, &upd, &same); err != nil {
			_ = br.Close()
			return fmt.Errorf("upsert %d: %w", i+1, err)
		}
		switch {
		case ins != nil:
			out[i] = delivery.UpsertResult{Outcome: delivery.UpsertCreated, ID: *ins}
		case upd != nil:
			out[i] = delivery.UpsertResult{Outcome: delivery.UpsertUpdated, ID: *upd}
		case n > 1:
			out[i] = delivery.UpsertResult{Outcome: delivery.UpsertConflict}
		case same != nil: // matched, within the attribute limit, and nothing to change
			out[i] = delivery.UpsertResult{Outcome: delivery.UpsertUnchanged, ID: *same}
		default:
			out[i] = delivery.UpsertResult{Outcome: delivery.UpsertTooManyAttributes}
		}
	}
	return br.Close()
}

// compileFilter turns f's attribute and consent conditions into SQL conditions whose values are
// all bind parameters (arg appends one and returns its placeholder): input never becomes SQL
// text. The operators and channels choose among fixed fragments.
func compileFilter(f delivery.Filter, arg func(any) string) ([]string, error) {
	var where []string
	for _, c := range f.Attributes {
		switch c.Op {
		case delivery.AttrEquals:
			// @> can use the attributes' GIN index.
			where = append(where, `attributes @> jsonb_build_object(`+arg(c.Key)+`::text, `+arg(c.Values[0])+`::text)`)
		case delivery.AttrIn:
			where = append(where, `attributes ->> `+arg(c.Key)+`::text = ANY(`+arg(c.Values)+`::text[])`)
		case delivery.AttrExists:
			where = append(where, `jsonb_exists(attributes, `+arg(c.Key)+`::text)`)
		case delivery.AttrPrefix:
			where = append(where, `starts_with(attributes ->> `+arg(c.Key)+`::text, `+arg(c.Values[0])+`::text)`)
		default:
			return nil, fmt.Errorf("compile filter: unknown attribute op %q", c.Op)
		}
	}
	for _, ch := range f.ConsentGranted {
		switch ch {
		case delivery.ChannelEmail:
			where = append(where, `email_consent = 'granted'`)
		case delivery.ChannelSMS:
			where = append(where, `sms_consent = 'granted'`)
		default:
			return nil, fmt.Errorf("compile filter: unknown channel %q", ch)
		}
	}
	return where, nil
}

// FilterContacts implements delivery.AudienceStore.
func (s *Store) FilterContacts(ctx context.Context, tenantID string, f delivery.Filter, afterID string, limit int) ([]delivery.Contact, error) {
	args := []any{tenantID}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	where := []string{`tenant_id = $1`}
	conds, err := compileFilter(f, arg)
	if err != nil {
		return nil, err
	}
	where = append(where, conds...)
	if afterID != "" {
		where = append(where, `id > `+arg(afterID)+`::uuid`)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+contactCols+` FROM contacts WHERE `+strings.Join(where, " AND ")+
		` ORDER BY id LIMIT `+arg(limit), args...)
	if err != nil {
		return nil, fmt.Errorf("filter contacts: %w", err)
	}
	cs, err := pgx.CollectRows(rows, scanContact)
	if err != nil {
		return nil, fmt.Errorf("filter contacts: %w", err)
	}
	return cs, nil
}

// identifierArgs splits identifiers by kind.
func identifierArgs(ids []delivery.Identifier) (userIDs, emails, phones []string) {
	userIDs, emails, phones = []string{}, []string{}, []string{}
	for _, id := range ids {
		switch id.Kind {
		case delivery.IdentifierUserID:
			userIDs = append(userIDs, id.Value)
		case delivery.IdentifierEmail:
			emails = append(emails, id.Value)
		case delivery.IdentifierPhone:
			phones = append(phones, id.Value)
		}
	}
	return userIDs, emails, phones
}

const byIdentifiers = `tenant_id = $1 AND (user_id = ANY($2::text[]) OR email = ANY($3::text[]) OR phone = ANY($4::text[]))`

// ExportContact implements delivery.AudienceStore.
func (s *Store) ExportContact(ctx context.Context, tenantID string, ids []delivery.Identifier) ([]delivery.Contact, error) {
	u, e, p := identifierArgs(ids)
	rows, err := s.pool.Query(ctx, `SELECT `+contactCols+` FROM contacts WHERE `+byIdentifiers+` ORDER BY id`, tenantID, u, e, p)
	if err != nil {
		return nil, fmt.Errorf("export contacts: %w", err)
	}
	cs, err := pgx.CollectRows(rows, scanContact)
	if err != nil {
		return nil, fmt.Errorf("export contacts: %w", err)
	}
	return cs, nil
}

// EraseContact implements delivery.AudienceStore: the rows go, and with them every personal
// field.
func (s *Store) EraseContact(ctx context.Context, tenantID string, ids []delivery.Identifier) ([]string, error) {
	u, e, p := identifierArgs(ids)
	rows, err := s.pool.Query(ctx, `DELETE FROM contacts WHERE `+byIdentifiers+` RETURNING id::text`, tenantID, u, e, p)
	if err != nil {
		return nil, fmt.Errorf("erase contacts: %w", err)
	}
	erased, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("erase contacts: %w", err)
	}
	return erased, nil
}
