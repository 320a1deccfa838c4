package main

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	"github.com/campaignmesh/campaignmesh/services/analytics"
)

// A reference is the best SQL the bench's author could write for a case's question on the
// schema, run directly: the engine's limit that the RPC is compared with. It answers the same
// question as the RPC — the range and campaigns are those of the query the RPC sent — and the
// bench checks that it finds the same figure (events; users for the funnel). Unlike the
// service's SQL it may rely on what the data set guarantees: one currency per tenant, so the
// distinct-user states are merged at one level, per group and currency. It uses the same
// approximate distinct-user states as the RPC (uniqCombined).
type reference func(aggs []analytics.Query, funnels []analytics.FunnelQuery) (sql string, args []any, figure figureOf)

// figureOf reads a reference's figure from its rows.
type figureOf func(rows driver.Rows) (int64, error)

// sumFirst adds up the first column (events) of every row; it reads every column, as a
// client would.
func sumFirst(rows driver.Rows) (int64, error) {
	types := rows.ColumnTypes()
	dest := make([]any, len(types))
	for i, ct := range types {
		dest[i] = reflect.New(ct.ScanType()).Interface()
	}
	var total int64
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return 0, err
		}
		total += int64(*dest[0].(*uint64))
	}
	return total, rows.Err()
}

// The metrics of a group, as the reference queries compute them: events first, read by sumFirst.
const (
	rollupMetrics = `countMerge(events) AS n, countMergeIf(events, type = 'impression'), countMergeIf(events, type = 'click'),
	countMergeIf(events, type = 'conversion') AS conversions, sumMergeIf(value_micros, type = 'conversion'),
	sumMergeIf(value_micros, type IN ('impression', 'click')), uniqCombinedMerge(users_approx)`
	rawMetrics = `count() AS n, countIf(type = 'impression'), countIf(type = 'click'), countIf(type = 'conversion'),
	sumIf(value_micros, type = 'conversion'), sumIf(value_micros, type IN ('impression', 'click')),
	uniqCombined(if(user_id != '', user_id, anonymous_id))`
)

// refRange is the time range of q over column, as a condition and its arguments.
func refRange(column string, start, end time.Time, openEnd bool) (string, []any) {
	cond, args := column+" >= ?", []any{start}
	if !openEnd {
		cond += " AND " + column + " < ?"
		args = append(args, end)
	}
	return cond, args
}

// rawPrewhere is the tenant, range and partitions of q on the raw table: PREWHERE reads the
// sort key's columns first and the others only where rows match.
func rawPrewhere(q analytics.Query) (string, []any) {
	cond, args := refRange("event_time", q.Start, q.End, q.OpenEnd)
	cond = "tenant_id = ? AND " + cond + " AND event_date >= toDate(?)"
	args = append([]any{q.TenantID}, append(args, q.Start.AddDate(0, 0, -1).Format(time.DateOnly))...)
	if len(q.CampaignIDs) == 1 {
		cond += " AND campaign_id = ?"
		args = append(args, q.CampaignIDs[0])
	}
	return cond, args
}

// rollupWhere is the tenant, range and campaigns of q on the rollup.
func rollupWhere(q analytics.Query) (string, []any) {
	cond, args := refRange("hour", q.Start, q.End, q.OpenEnd)
	cond = "tenant_id = ? AND " + cond
	args = append([]any{q.TenantID}, args...)
	switch len(q.CampaignIDs) {
	case 0:
	case 1:
		cond += " AND campaign_id = ?"
		args = append(args, q.CampaignIDs[0])
	default:
		cond += " AND campaign_id IN ('" + strings.Join(q.CampaignIDs, "', '") + "')" // ids of the bench's own making
	}
	return cond, args
}

// lastAgg is the aggregate query an RPC sent last (the one its answer's figure comes from).
func lastAgg(aggs []analytics.Query) analytics.Query { return aggs[len(aggs)-1] }

func refRollupSummary(groupBy, tail string) reference {
	return func(aggs []analytics.Query, _ []analytics.FunnelQuery) (string, []any, figureOf) {
		where, args := rollupWhere(lastAgg(aggs))
		return `SELECT ` + rollupMetrics + ` FROM events_hourly WHERE ` + where + ` GROUP BY ` + groupBy + `currency` + tail, args, sumFirst
	}
}

func refRawSummary(aggs []analytics.Query, _ []analytics.FunnelQuery) (string, []any, figureOf) {
	where, args := rawPrewhere(lastAgg(aggs))
	return `SELECT ` + rawMetrics + ` FROM events PREWHERE ` + where + ` GROUP BY currency`, args, sumFirst
}

func refRollupSeries(aggs []analytics.Query, _ []analytics.FunnelQuery) (string, []any, figureOf) {
	q := lastAgg(aggs)
	where, args := rollupWhere(q)
	bucket := "hour"
	if q.Granularity == analytics.Day {
		bucket = "toStartOfDay(hour, '" + q.Location.String() + "')" // a zone name of the bench's own
	}
	return `SELECT ` + rollupMetrics + `, ` + bucket + ` AS b FROM events_hourly WHERE ` + where + ` GROUP BY b, currency`, args, sumFirst
}

func refMinuteSeries(aggs []analytics.Query, _ []analytics.FunnelQuery) (string, []any, figureOf) {
	where, args := rawPrewhere(lastAgg(aggs))
	return `SELECT ` + rawMetrics + `, toStartOfMinute(event_time) AS b FROM events PREWHERE ` + where + ` GROUP BY b, currency`, args, sumFirst
}

func refPropertyBreakdown(aggs []analytics.Query, _ []analytics.FunnelQuery) (string, []any, figureOf) {
	q := lastAgg(aggs)
	where, args := rawPrewhere(q)
	return `SELECT ` + rawMetrics + `, prop_values[indexOf(prop_keys, '` + q.PropertyKey + `')] AS v FROM events PREWHERE ` + where +
		fmt.Sprintf(` GROUP BY v, currency ORDER BY n DESC, v LIMIT %d`, q.Limit), args, sumFirst
}

func refCampaignBreakdown(aggs []analytics.Query, _ []analytics.FunnelQuery) (string, []any, figureOf) {
	q := lastAgg(aggs)
	where, args := rollupWhere(q)
	return `SELECT ` + rollupMetrics + `, campaign_id FROM events_hourly WHERE ` + where +
		fmt.Sprintf(` GROUP BY campaign_id, currency ORDER BY conversions DESC, campaign_id LIMIT %d`, q.Limit), args, sumFirst
}

// refFunnel is the funnel's windowFunnel with the step names as one IN set in PREWHERE; its
// figure is the users of every step added up, as the RPC's.
func refFunnel(_ []analytics.Query, funnels []analytics.FunnelQuery) (string, []any, figureOf) {
	f := funnels[len(funnels)-1]
	var conds, names []string
	var condArgs, nameArgs []any
	for i, s := range f.Steps {
		c := "name = ?"
		condArgs = append(condArgs, s.EventName)
		if i == 0 && !f.OpenEnd {
			c += " AND event_time < ?"
			condArgs = append(condArgs, f.End)
		}
		conds = append(conds, c)
		names = append(names, "?")
		nameArgs = append(nameArgs, s.EventName)
	}
	where, whereArgs := rawPrewhere(analytics.Query{TenantID: f.TenantID, Start: f.Start, End: f.End.Add(f.Window), OpenEnd: f.OpenEnd})
	args := append([]any{int64(f.Window / time.Second)}, condArgs...)
	args = append(append(args, whereArgs...), nameArgs...)
	sql := `SELECT level, count() FROM (
			SELECT windowFunnel(?)(event_time, ` + strings.Join(conds, ", ") + `) AS level
			FROM events PREWHERE ` + where + ` AND name IN (` + strings.Join(names, ", ") + `)
			GROUP BY if(user_id != '', user_id, anonymous_id))
		WHERE level > 0 GROUP BY level`
	steps := len(f.Steps)
	return sql, args, func(rows driver.Rows) (int64, error) {
		var users int64
		for rows.Next() {
			var level uint8
			var n uint64
			if err := rows.Scan(&level, &n); err != nil {
				return 0, err
			}
			users += int64(n) * int64(min(int(level), steps)) // reached steps 1…level
		}
		return users, rows.Err()
	}
}

// referenceRun is the run of a reference's SQL on conn.
func referenceRun(conn driver.Conn, sql string, args []any, figure figureOf) run {
	return func(ctx context.Context) (int64, analyticsv1.DataSource, error) {
		// The service's setting that lets small reads use every core (clickhouse.Queries).
		ctx = ch.Context(ctx, ch.WithSettings(ch.Settings{"merge_tree_min_rows_for_concurrent_read": 2048}))
		rows, err := conn.Query(ctx, sql, args...)
		if err != nil {
			return 0, 0, err
		}
		defer rows.Close()
		n, err := figure(rows)
		return n, 0, err
	}
}
