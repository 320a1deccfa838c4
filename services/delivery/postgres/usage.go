package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// Usage counts delivery's usage for billing (delivery.UsageStore).
type Usage struct{ pool *pgxpool.Pool }

var _ delivery.UsageStore = (*Usage)(nil)

// NewUsage returns the usage counts over pool.
func NewUsage(pool *pgxpool.Pool) *Usage { return &Usage{pool: pool} }

// UsageCounts implements delivery.UsageStore. A sent row counts once, on the day of its
// attempt_time (when the attempt that sent it was claimed; nothing changes it afterwards, unlike
// update_time, which an erasure touches), under its campaign's channel: the dispatcher's
// (dispatch_campaigns), else the campaign content's. Rows are grouped per campaign before the
// channel is looked up, so the join reads one row per campaign, not per message.
func (u *Usage) UsageCounts(ctx context.Context, from, to time.Time) ([]delivery.TenantUsage, error) {
	rows, err := u.pool.Query(ctx, `
		WITH sent AS (
			SELECT tenant_id, campaign_id, count(*) AS n FROM ledger
			WHERE state = 'sent' AND attempt_time >= $1 AND attempt_time < $2
			GROUP BY tenant_id, campaign_id),
		messages AS (
			SELECT s.tenant_id,
				coalesce(sum(s.n) FILTER (WHERE coalesce(d.channel, c.channel) = 'email'), 0) AS email,
				coalesce(sum(s.n) FILTER (WHERE coalesce(d.channel, c.channel) = 'sms'), 0) AS sms
			FROM sent s
			LEFT JOIN dispatch_campaigns d ON d.tenant_id = s.tenant_id AND d.campaign_id = s.campaign_id
			LEFT JOIN campaign_contents c ON c.tenant_id = s.tenant_id AND c.campaign_id::text = s.campaign_id
			GROUP BY s.tenant_id),
		contacts AS (
			SELECT tenant_id, count(*) AS n FROM contacts GROUP BY tenant_id)
		SELECT coalesce(m.tenant_id, k.tenant_id), coalesce(m.email, 0)::bigint, coalesce(m.sms, 0)::bigint, coalesce(k.n, 0)
		FROM messages m FULL JOIN contacts k ON k.tenant_id = m.tenant_id
		ORDER BY 1`, from, to)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("count usage: %w", err))
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (delivery.TenantUsage, error) {
		var t delivery.TenantUsage
		err := row.Scan(&t.TenantID, &t.MessagesEmail, &t.MessagesSMS, &t.ContactsStored)
		return t, err
	})
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("count usage: %w", err))
	}
	return out, nil
}
