package postgres

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// Ledger implements delivery.LedgerStore on the ledger table (migrations/00002_ledger.sql).
type Ledger struct{ pool *pgxpool.Pool }

var _ delivery.LedgerStore = (*Ledger)(nil)

// NewLedger returns the ledger store over pool, whose database has the migrations applied.
func NewLedger(pool *pgxpool.Pool) *Ledger { return &Ledger{pool: pool} }

// addBatch bounds one insert statement's arrays.
const addBatch = 5000

const ledgerCols = `id::text, tenant_id, campaign_id, contact_id, address, variant, state, attempt, not_before,
	lease_owner, lease_expiry, attempt_time, provider_id, reason`

func scanRecipient(row pgx.CollectableRow) (delivery.Recipient, error) {
	var (
		r            delivery.Recipient
		state        string
		expiry, when *time.Time
	)
	err := row.Scan(&r.ID, &r.TenantID, &r.CampaignID, &r.ContactID, &r.Address, &r.Variant, &state, &r.Attempt,
		&r.NotBefore, &r.LeaseOwner, &expiry, &when, &r.ProviderID, &r.Reason)
	r.State = delivery.RecipientState(state)
	if expiry != nil {
		r.LeaseExpiry = *expiry
	}
	if when != nil {
		r.AttemptTime = *when
	}
	return r, err
}

// AddRecipients implements delivery.LedgerStore. Each contact's variant comes from
// delivery.AssignVariant, so inserting the same contacts again (a second resolution, another
// replica) neither duplicates a row nor moves a contact to another variant.
func (l *Ledger) AddRecipients(ctx context.Context, tenantID, campaignID string, variants []delivery.Variant, rs []delivery.NewRecipient) (int, error) {
	added := 0
	for start := 0; start < len(rs); start += addBatch {
		batch := rs[start:min(start+addBatch, len(rs))]
		n := len(batch)
		contacts, addresses, vs, states, reasons := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		notBefore := make([]pgtype.Timestamptz, n)
		for i, r := range batch {
			v, err := delivery.AssignVariant(campaignID, r.ContactID, variants)
			if err != nil {
				return added, fmt.Errorf("assign variant of contact %s: %w", r.ContactID, err)
			}
			contacts[i], addresses[i], vs[i] = r.ContactID, r.Address, v
			states[i], reasons[i] = string(delivery.StatePending), ""
			if r.Skip != "" {
				states[i], reasons[i] = string(delivery.StateSkipped), r.Skip
			}
			notBefore[i] = pgtype.Timestamptz{Time: r.NotBefore, Valid: !r.NotBefore.IsZero()}
		}
		tag, err := l.pool.Exec(ctx, `
			INSERT INTO ledger (tenant_id, campaign_id, contact_id, address, variant, state, reason, not_before, create_time, update_time)
			SELECT $1, $2, c, a, v, s, r, coalesce(nb, now()), now(), now()
			FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[]) AS u(c, a, v, s, r, nb)
			ON CONFLICT (tenant_id, campaign_id, contact_id) DO NOTHING`,
			tenantID, campaignID, contacts, addresses, vs, states, reasons, notBefore)
		if err != nil {
			return added, pgdb.Classify(fmt.Errorf("add recipients to campaign %s: %w", campaignID, err))
		}
		added += int(tag.RowsAffected())
	}
	return added, nil
}

// ClaimPending implements delivery.LedgerStore: FOR UPDATE SKIP LOCKED, so concurrent
// senders of one campaign claim disjoint rows without waiting on each other.
func (l *Ledger) ClaimPending(ctx context.Context, c delivery.Claim) ([]delivery.Recipient, error) {
	if c.Limit <= 0 {
		return nil, nil
	}
	rows, err := l.pool.Query(ctx, `
		WITH due AS (
			SELECT id FROM ledger
			WHERE tenant_id = $1 AND campaign_id = $2 AND state = 'pending' AND not_before <= $3
			ORDER BY not_before, id
			LIMIT $4
			FOR UPDATE SKIP LOCKED)
		UPDATE ledger l
		SET state = 'sending', lease_owner = $5, lease_expiry = $6, attempt = l.attempt + 1, attempt_time = $3, update_time = $3
		FROM due WHERE l.id = due.id
		RETURNING `+prefixed("l.", ledgerCols),
		c.TenantID, c.CampaignID, c.Now, c.Limit, c.Owner, c.Now.Add(c.Lease))
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("claim recipients of campaign %s: %w", c.CampaignID, err))
	}
	out, err := pgx.CollectRows(rows, scanRecipient)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("claim recipients of campaign %s: %w", c.CampaignID, err))
	}
	return out, nil
}

// Record implements delivery.LedgerStore. The WHERE clause is the exactly-once guard: only
// the owner of the row's current lease, for the attempt it claimed, finishes the row.
func (l *Ledger) Record(ctx context.Context, o delivery.Outcome) (bool, error) {
	id, err := strconv.ParseInt(o.ID, 10, 64)
	if err != nil {
		return false, nil
	}
	giveBack := 0
	if o.Release {
		giveBack = 1
	}
	notBefore := pgtype.Timestamptz{Time: o.NotBefore, Valid: !o.NotBefore.IsZero()}
	tag, err := l.pool.Exec(ctx, `
		UPDATE ledger
		SET state = $4, provider_id = $5, reason = $6, not_before = coalesce($7::timestamptz, $9::timestamptz), lease_owner = '', lease_expiry = NULL,
		    attempt = attempt - $8, update_time = $9
		WHERE id = $1 AND state = 'sending' AND lease_owner = $2 AND attempt = $3`,
		id, o.Owner, o.Attempt, string(o.State), o.ProviderID, o.Reason, notBefore, giveBack, o.Now)
	if err != nil {
		return false, pgdb.Classify(fmt.Errorf("record outcome of recipient %s: %w", o.ID, err))
	}
	return tag.RowsAffected() == 1, nil
}

// ExpireLeases implements delivery.LedgerStore.
func (l *Ledger) ExpireLeases(ctx context.Context, tenantID, campaignID string, now time.Time) (int, error) {
	tag, err := l.pool.Exec(ctx, `
		UPDATE ledger
		SET state = 'unknown', lease_owner = '', lease_expiry = NULL, not_before = $3,
		    reason = 'lease expired during the send', update_time = $3
		WHERE tenant_id = $1 AND campaign_id = $2 AND state = 'sending' AND lease_expiry < $3`,
		tenantID, campaignID, now)
	if err != nil {
		return 0, pgdb.Classify(fmt.Errorf("expire leases of campaign %s: %w", campaignID, err))
	}
	return int(tag.RowsAffected()), nil
}

// ClaimUnknown implements delivery.LedgerStore.
func (l *Ledger) ClaimUnknown(ctx context.Context, tenantID, campaignID string, now time.Time, recheck time.Duration, limit int) ([]delivery.Recipient, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := l.pool.Query(ctx, `
		WITH due AS (
			SELECT id FROM ledger
			WHERE tenant_id = $1 AND campaign_id = $2 AND state = 'unknown' AND not_before <= $3
			ORDER BY not_before, id
			LIMIT $5
			FOR UPDATE SKIP LOCKED)
		UPDATE ledger l SET not_before = $4, update_time = $3
		FROM due WHERE l.id = due.id
		RETURNING `+prefixed("l.", ledgerCols),
		tenantID, campaignID, now, now.Add(recheck), limit)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("claim unknown recipients of campaign %s: %w", campaignID, err))
	}
	out, err := pgx.CollectRows(rows, scanRecipient)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("claim unknown recipients of campaign %s: %w", campaignID, err))
	}
	return out, nil
}

// Resolve implements delivery.LedgerStore.
func (l *Ledger) Resolve(ctx context.Context, r delivery.Resolution) (bool, error) {
	id, err := strconv.ParseInt(r.ID, 10, 64)
	if err != nil {
		return false, nil
	}
	tag, err := l.pool.Exec(ctx, `
		UPDATE ledger SET state = $3, provider_id = $4, reason = $5, not_before = $6, update_time = $6
		WHERE id = $1 AND state = 'unknown' AND attempt = $2`,
		id, r.Attempt, string(r.State), r.ProviderID, r.Reason, r.Now)
	if err != nil {
		return false, pgdb.Classify(fmt.Errorf("resolve recipient %s: %w", r.ID, err))
	}
	return tag.RowsAffected() == 1, nil
}

// Counts implements delivery.LedgerStore.
func (l *Ledger) Counts(ctx context.Context, tenantID, campaignID string) (delivery.Counts, error) {
	rows, err := l.pool.Query(ctx, `
		SELECT variant, state, count(*) FROM ledger WHERE tenant_id = $1 AND campaign_id = $2 GROUP BY variant, state`,
		tenantID, campaignID)
	if err != nil {
		return delivery.Counts{}, pgdb.Classify(fmt.Errorf("count recipients of campaign %s: %w", campaignID, err))
	}
	defer rows.Close()
	c := delivery.Counts{ByState: map[delivery.RecipientState]int{}, ByVariant: map[string]map[delivery.RecipientState]int{}}
	for rows.Next() {
		var (
			variant, state string
			n              int
		)
		if err := rows.Scan(&variant, &state, &n); err != nil {
			return delivery.Counts{}, fmt.Errorf("count recipients of campaign %s: %w", campaignID, err)
		}
		s := delivery.RecipientState(state)
		c.ByState[s] += n
		if c.ByVariant[variant] == nil {
			c.ByVariant[variant] = map[delivery.RecipientState]int{}
		}
		c.ByVariant[variant][s] += n
	}
	if err := rows.Err(); err != nil {
		return delivery.Counts{}, pgdb.Classify(fmt.Errorf("count recipients of campaign %s: %w", campaignID, err))
	}
	return c, nil
}

// Unfinished implements delivery.LedgerStore: one EXISTS per state, each answered from
// that state's partial index, rather than counting a large campaign.
func (l *Ledger) Unfinished(ctx context.Context, tenantID, campaignID string, settlingOnly bool) (bool, error) {
	var open bool
	err := l.pool.QueryRow(ctx, `
		SELECT (NOT $3 AND EXISTS (SELECT 1 FROM ledger WHERE tenant_id = $1 AND campaign_id = $2 AND state = 'pending'))
		    OR EXISTS (SELECT 1 FROM ledger WHERE tenant_id = $1 AND campaign_id = $2 AND state = 'sending')
		    OR EXISTS (SELECT 1 FROM ledger WHERE tenant_id = $1 AND campaign_id = $2 AND state = 'unknown')`,
		tenantID, campaignID, settlingOnly).Scan(&open)
	if err != nil {
		return false, pgdb.Classify(fmt.Errorf("check open recipients of campaign %s: %w", campaignID, err))
	}
	return open, nil
}

// Get returns one row of a tenant's ledger (false when there is none).
func (l *Ledger) Get(ctx context.Context, tenantID, id string) (delivery.Recipient, bool, error) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return delivery.Recipient{}, false, nil
	}
	rows, err := l.pool.Query(ctx, `SELECT `+ledgerCols+` FROM ledger WHERE tenant_id = $1 AND id = $2`, tenantID, n)
	if err != nil {
		return delivery.Recipient{}, false, pgdb.Classify(fmt.Errorf("read recipient %s: %w", id, err))
	}
	r, err := pgx.CollectExactlyOneRow(rows, scanRecipient)
	if err == pgx.ErrNoRows {
		return delivery.Recipient{}, false, nil
	}
	if err != nil {
		return delivery.Recipient{}, false, pgdb.Classify(fmt.Errorf("read recipient %s: %w", id, err))
	}
	return r, true, nil
}

// prefixed qualifies each of the comma-separated columns with p.
func prefixed(p, cols string) string {
	out := make([]byte, 0, len(cols)+64)
	atStart := true
	for i := 0; i < len(cols); i++ {
		ch := cols[i]
		if atStart && ch != ' ' && ch != '\t' && ch != '\n' {
			out = append(out, p...)
			atStart = false
		}
		if ch == ',' {
			atStart = true
		}
		out = append(out, ch)
	}
	return string(out)
}
