package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// Dispatch implements delivery.DispatchStore on the dispatch_campaigns table
// (migrations/00006_dispatch.sql) and the ledger.
type Dispatch struct{ pool *pgxpool.Pool }

var _ delivery.DispatchStore = (*Dispatch)(nil)

// NewDispatch returns the dispatch store over pool, whose database has the migrations applied.
func NewDispatch(pool *pgxpool.Pool) *Dispatch { return &Dispatch{pool: pool} }

// Resolved implements delivery.DispatchStore.
func (d *Dispatch) Resolved(ctx context.Context, tenantID, campaignID string, activation time.Time) (bool, error) {
	var ok bool
	err := d.pool.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM dispatch_campaigns
		               WHERE tenant_id = $1 AND campaign_id = $2 AND resolved_activation = $3)`,
		tenantID, campaignID, activation).Scan(&ok)
	if err != nil {
		return false, pgdb.Classify(fmt.Errorf("check resolution of campaign %s: %w", campaignID, err))
	}
	return ok, nil
}

// MarkResolved implements delivery.DispatchStore.
func (d *Dispatch) MarkResolved(ctx context.Context, c delivery.CampaignRef, activation time.Time) error {
	_, err := d.pool.Exec(ctx, `
		INSERT INTO dispatch_campaigns (tenant_id, campaign_id, channel, resolved_activation, resolved_time)
		VALUES ($1, $2, $3, $4, now())
		ON CONFLICT (tenant_id, campaign_id) DO UPDATE
		SET resolved_activation = excluded.resolved_activation, resolved_time = excluded.resolved_time`,
		c.TenantID, c.CampaignID, string(c.Channel), activation)
	if err != nil {
		return pgdb.Classify(fmt.Errorf("mark campaign %s resolved: %w", c.CampaignID, err))
	}
	return nil
}

// RecentMessages implements delivery.DispatchStore: the rows of the contacts in the tenant's
// other campaigns on the channel that were sent since since (a sent row's update_time is when
// the provider accepted it) or are still on their way and were added or retried since then
// (an older open row belongs to a campaign that stopped, and may never be sent).
func (d *Dispatch) RecentMessages(ctx context.Context, tenantID string, ch delivery.Channel, exceptCampaignID string, contactIDs []string, since time.Time) (map[string]int, error) {
	rows, err := d.pool.Query(ctx, `
		SELECT l.contact_id, count(*)
		FROM ledger l JOIN dispatch_campaigns c ON c.tenant_id = l.tenant_id AND c.campaign_id = l.campaign_id
		WHERE l.tenant_id = $1 AND l.contact_id = ANY($4::text[]) AND l.campaign_id <> $3 AND c.channel = $2
		  AND l.state IN ('sent', 'pending', 'sending', 'unknown') AND l.update_time >= $5
		GROUP BY l.contact_id`,
		tenantID, string(ch), exceptCampaignID, contactIDs, since)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("count recent messages: %w", err))
	}
	out := map[string]int{}
	var (
		id string
		n  int
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error { out[id] = n; return nil })
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("count recent messages: %w", err))
	}
	return out, nil
}

// Unsettled implements delivery.DispatchStore. Each probe uses the ledger's partial index of
// sending or unknown rows, so it reads only such rows however large the ledger.
func (d *Dispatch) Unsettled(ctx context.Context) ([]delivery.CampaignRef, error) {
	rows, err := d.pool.Query(ctx, `
		SELECT c.tenant_id, c.campaign_id, c.channel FROM dispatch_campaigns c
		WHERE EXISTS (SELECT 1 FROM ledger l WHERE l.tenant_id = c.tenant_id AND l.campaign_id = c.campaign_id AND l.state = 'sending')
		   OR EXISTS (SELECT 1 FROM ledger l WHERE l.tenant_id = c.tenant_id AND l.campaign_id = c.campaign_id AND l.state = 'unknown')`)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("list unsettled campaigns: %w", err))
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (delivery.CampaignRef, error) {
		var (
			r  delivery.CampaignRef
			ch string
		)
		err := row.Scan(&r.TenantID, &r.CampaignID, &ch)
		r.Channel = delivery.Channel(ch)
		return r, err
	})
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("list unsettled campaigns: %w", err))
	}
	return out, nil
}

// TakeCampaign implements delivery.DispatchStore with one conditional upsert: the row is
// locked by the statement, so two replicas racing for a free campaign cannot both win.
func (d *Dispatch) TakeCampaign(ctx context.Context, c delivery.CampaignRef, owner string, until time.Time) (bool, error) {
	var got string
	err := d.pool.QueryRow(ctx, `
		INSERT INTO dispatch_campaigns AS d (tenant_id, campaign_id, channel, driver, driver_expiry)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (tenant_id, campaign_id) DO UPDATE
		SET driver = excluded.driver, driver_expiry = excluded.driver_expiry, channel = excluded.channel
		WHERE d.driver = '' OR d.driver = excluded.driver OR d.driver_expiry < now()
		RETURNING driver`,
		c.TenantID, c.CampaignID, string(c.Channel), owner, until).Scan(&got)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, pgdb.Classify(fmt.Errorf("take campaign %s: %w", c.CampaignID, err))
	}
	return got == owner, nil
}

// ReleaseCampaign implements delivery.DispatchStore.
func (d *Dispatch) ReleaseCampaign(ctx context.Context, c delivery.CampaignRef, owner string) error {
	_, err := d.pool.Exec(ctx, `
		UPDATE dispatch_campaigns SET driver = '', driver_expiry = NULL
		WHERE tenant_id = $1 AND campaign_id = $2 AND driver = $3`,
		c.TenantID, c.CampaignID, owner)
	if err != nil {
		return pgdb.Classify(fmt.Errorf("release campaign %s: %w", c.CampaignID, err))
	}
	return nil
}
