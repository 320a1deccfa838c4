package clickhouse

import (
	"context"
	"fmt"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/campaignmesh/campaignmesh/services/analytics"
)

// MatchUsers implements analytics.Store: the distinct user ids of the page that have an event
// of the type (name, campaign) in the range, read from the raw events of the range's
// partitions, tenant first in the sort key. Duplicates of an event (not yet merged away) only
// repeat a user id, which DISTINCT removes.
func (q *Queries) MatchUsers(ctx context.Context, b analytics.BehaviourQuery) ([]string, error) {
	if err := requireTenant(b.TenantID); err != nil {
		return nil, err
	}
	sql, args := MatchUsersSQL(b, q.tables())
	rows, err := q.conn.Query(q.settings(ctx), sql, args...)
	if err != nil {
		return nil, q.queryError(ctx, "match behaviour", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("match behaviour: scan: %w", err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		return nil, q.queryError(ctx, "match behaviour", err)
	}
	return out, nil
}

// MatchUsersSQL is the SQL and arguments MatchUsers runs for b.
func MatchUsersSQL(b analytics.BehaviourQuery, t Tables) (string, []any) {
	scopeQuery := analytics.Query{TenantID: b.TenantID, Start: b.Start, End: b.End, OpenEnd: b.OpenEnd}
	if b.CampaignID != "" {
		scopeQuery.CampaignIDs = []string{b.CampaignID}
	}
	where, args := rawScope(scopeQuery)
	where += " AND type = ?"
	args = append(args, b.EventType)
	if b.EventName != "" {
		where += " AND name = ?"
		args = append(args, b.EventName)
	}
	ids := make([]any, len(b.UserIDs))
	for i, id := range b.UserIDs {
		ids[i] = id
	}
	where += " AND user_id IN ?"
	args = append(args, ch.GroupSet{Value: ids})
	return `SELECT DISTINCT user_id FROM ` + t.Events + ` WHERE ` + where + ` ORDER BY user_id`, args
}
