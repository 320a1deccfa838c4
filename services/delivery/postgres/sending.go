package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

var _ delivery.SendingStore = (*Ledger)(nil)

// CampaignProgress implements delivery.SendingStore.
func (l *Ledger) CampaignProgress(ctx context.Context, tenantID, campaignID string) (delivery.CampaignProgress, error) {
	c, err := l.Counts(ctx, tenantID, campaignID)
	if err != nil {
		return delivery.CampaignProgress{}, err
	}
	p := delivery.CampaignProgress{Counts: c}
	var start, last *time.Time
	err = l.pool.QueryRow(ctx, `SELECT min(create_time), max(update_time) FROM ledger WHERE tenant_id = $1 AND campaign_id = $2`,
		tenantID, campaignID).Scan(&start, &last)
	if err != nil {
		return delivery.CampaignProgress{}, pgdb.Classify(fmt.Errorf("read times of campaign %s: %w", campaignID, err))
	}
	if start != nil {
		p.StartTime = *start
	}
	if last != nil && c.Open() == 0 {
		p.FinishTime = *last
	}
	err = l.pool.QueryRow(ctx, `SELECT channel FROM dispatch_campaigns WHERE tenant_id = $1 AND campaign_id = $2`, tenantID, campaignID).Scan(&p.Channel)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return delivery.CampaignProgress{}, pgdb.Classify(fmt.Errorf("read channel of campaign %s: %w", campaignID, err))
	}
	return p, nil
}

// LedgerEntries implements delivery.SendingStore.
func (l *Ledger) LedgerEntries(ctx context.Context, tenantID, campaignID string, afterID int64, limit int) ([]delivery.LedgerEntry, error) {
	rows, err := l.pool.Query(ctx, `SELECT `+ledgerCols+`, create_time, update_time FROM ledger
		WHERE tenant_id = $1 AND campaign_id = $2 AND id > $3 ORDER BY id LIMIT $4`,
		tenantID, campaignID, afterID, limit)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("list recipients of campaign %s: %w", campaignID, err))
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (delivery.LedgerEntry, error) {
		var (
			e            delivery.LedgerEntry
			state        string
			expiry, when *time.Time
		)
		r := &e.Recipient
		err := row.Scan(&r.ID, &r.TenantID, &r.CampaignID, &r.ContactID, &r.Address, &r.Variant, &state, &r.Attempt,
			&r.NotBefore, &r.LeaseOwner, &expiry, &when, &r.ProviderID, &r.Reason, &e.CreateTime, &e.UpdateTime)
		r.State = delivery.RecipientState(state)
		if expiry != nil {
			r.LeaseExpiry = *expiry
		}
		if when != nil {
			r.AttemptTime = *when
		}
		return e, err
	})
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("list recipients of campaign %s: %w", campaignID, err))
	}
	return out, nil
}
