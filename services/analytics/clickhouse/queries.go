package clickhouse

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/analytics"
)

// QueryLimits are the server-side limits of every analytics query.
type QueryLimits struct {
	// MaxExecutionTime stops a query in ClickHouse (max_execution_time).
	MaxExecutionTime time.Duration
	// MaxResultRows caps a result (max_result_rows; the query fails beyond it).
	MaxResultRows int
	// MaxMemory caps a query's memory in bytes (max_memory_usage).
	MaxMemory int64
}

// DefaultQueryLimits are the documented defaults.
var DefaultQueryLimits = QueryLimits{MaxExecutionTime: 10 * time.Second, MaxResultRows: 100000, MaxMemory: 4 << 30}

// Queries answers analytics questions over the events and rollup tables. Every value reaches
// ClickHouse as a bound parameter; only the fixed SQL fragments below are spliced in. Queries
// run on the reader connection (a read-only ClickHouse user); Delete and the data-subject
// store (subjects.go: exports and erasures, whose identifiers are spliced in as escaped
// literals) use the writer's.
type Queries struct {
	conn   driver.Conn // reader
	writer driver.Conn
	shards []driver.Conn // the writer user's, one per shard (WithShards); nil: writer alone
	limits QueryLimits
	logger *slog.Logger
	// rebuildPause, when set, runs in RebuildHours between a shard's rollup delete and its
	// insert (WithRebuildPause).
	rebuildPause func(ctx context.Context, shard int)
}

// NewQueries returns the query store: reader for queries, writer for deletions.
func NewQueries(reader, writer driver.Conn, limits QueryLimits) *Queries {
	return &Queries{conn: reader, writer: writer, limits: limits, logger: slog.Default()}
}

// WithShards names the writer user's connection to every shard, in shard order: Delete runs its
// mutations on each (a Distributed table takes none). Without it Delete runs on the writer
// connection's server alone, which is the whole of a one-shard cluster.
func (q *Queries) WithShards(conns []driver.Conn) *Queries { q.shards = conns; return q }

// Tables are the tables queries read: the events and their hourly rollup.
type Tables struct{ Events, Hourly string }

// The tables of a cluster (Distributed, over every shard) and of one shard's server.
var (
	Distributed = Tables{Events: "events", Hourly: "events_hourly"}
	Local       = Tables{Events: "events_local", Hourly: "events_hourly_local"}
)

// tables are the tables q reads: the Distributed ones over several shards; with one shard (no
// WithShards, or one) its own tables, which hold the same rows without the Distributed table's
// step (about 1.5 ms of a campaign's 8 ms rollup summary on the bench's data).
func (q *Queries) tables() Tables {
	if len(q.shards) > 1 {
		return Distributed
	}
	return Local
}

// WithLogger sets where the causes of store failures are logged (callers see only
// analytics.ErrStoreUnavailable).
func (q *Queries) WithLogger(l *slog.Logger) *Queries { q.logger = l; return q }

var _ analytics.Store = (*Queries)(nil)

// The key expressions of each dimension, over the raw table and over the rollup.
var rawKeys = map[analytics.Dimension][2]string{
	analytics.NoDimension:     {"''", "''"},
	analytics.Campaign:        {"campaign_id", "''"},
	analytics.CampaignVariant: {"campaign_id", "variant"},
	analytics.EventName:       {"name", "''"},
	analytics.EventType:       {"type", "''"},
	analytics.Variant:         {"variant", "''"},
	analytics.App:             {"app", "''"},
	analytics.Device:          {"device", "''"},
	analytics.Locale:          {"locale", "''"},
	analytics.Property:        {"prop_values[indexOf(prop_keys, ?)]", "''"},
}

var orderColumns = map[analytics.Metric]string{
	analytics.MetricEvents: "m_events", analytics.MetricImpressions: "m_impressions", analytics.MetricClicks: "m_clicks",
	analytics.MetricConversions: "m_conversions", analytics.MetricConversionValue: "m_value", analytics.MetricUniqueUsers: "m_users",
	analytics.MetricSpend: "m_spend",
}

// bucketKey is the bucket start as Unix seconds, in the request's zone (bound as a parameter).
func bucketKey(g analytics.Granularity, column string) string {
	switch g {
	case analytics.Minute:
		return "toString(toUnixTimestamp(toStartOfMinute(" + column + ")))"
	case analytics.Hour:
		return "toString(toUnixTimestamp(toStartOfHour(" + column + ", ?)))"
	}
	return "toString(toUnixTimestamp(toStartOfDay(" + column + ", ?)))"
}

// Aggregate implements analytics.Store. A rollup query first tries one pass over the stored
// states (OnePassSQL), which is exact unless a group holds amounts in more than one currency:
// then, as a raw query always does, it adds up per currency first (AggregateSQL).
func (q *Queries) Aggregate(ctx context.Context, a analytics.Query) ([]analytics.Aggregate, error) {
	if err := requireTenant(a.TenantID); err != nil {
		return nil, err
	}
	if a.Rollup {
		sql, args, err := OnePassSQL(a, q.tables())
		if err != nil {
			return nil, err
		}
		out, mixed, err := q.aggregate(ctx, a, sql, args)
		if err != nil || !mixed {
			return out, err
		}
	}
	sql, args, err := AggregateSQL(a, q.tables())
	if err != nil {
		return nil, err
	}
	out, _, err := q.aggregate(ctx, a, sql, args)
	return out, err
}

// aggregate runs one of the aggregate queries (whose last column says whether a group holds
// amounts in several currencies) and reads its rows and, for a.Total, its total.
func (q *Queries) aggregate(ctx context.Context, a analytics.Query, sql string, args []any) (out []analytics.Aggregate, mixed bool, err error) {
	rows, err := q.conn.Query(q.settings(ctx), sql, args...)
	if err != nil {
		return nil, false, q.queryError(ctx, "aggregate events", err)
	}
	defer rows.Close()
	scan := func(scan func(dest ...any) error, r *analytics.Aggregate) (bool, error) {
		var value, spend int64
		var currencies uint64
		err := scan(&r.K1, &r.K2, &r.Events, &r.Impressions, &r.Clicks, &r.Conversions, &r.UniqueUsers,
			&r.Currencies, &r.ConversionValue, &r.Spend, &value, &spend, &currencies)
		return currencies > 1, err
	}
	for rows.Next() {
		var r analytics.Aggregate
		several, err := scan(rows.Scan, &r)
		if err != nil {
			return nil, false, fmt.Errorf("aggregate events: scan: %w", err)
		}
		mixed = mixed || several
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, false, q.queryError(ctx, "aggregate events", err)
	}
	if a.Total {
		total := analytics.Aggregate{Total: true}
		if len(out) > 0 { // no groups, nothing to add up
			if _, err := scan(rows.Totals, &total); err != nil {
				return nil, false, fmt.Errorf("aggregate events: scan the total: %w", err)
			}
			// The amounts per currency from the groups': the total's arrays are not per currency.
			total.K1, total.K2, total.Currencies, total.ConversionValue, total.Spend = "", "", nil, nil, nil
			for _, r := range out {
				total.Currencies = append(total.Currencies, r.Currencies...)
				total.ConversionValue = append(total.ConversionValue, r.ConversionValue...)
				total.Spend = append(total.Spend, r.Spend...)
			}
			total.Currencies, total.ConversionValue, total.Spend = byCurrency(total.Currencies, total.ConversionValue, total.Spend)
		}
		out = append(out, total)
	}
	return out, mixed, nil
}

// byCurrency adds up the amounts of each currency.
func byCurrency(currencies []string, values, spends []int64) ([]string, []int64, []int64) {
	var cs []string
	var vs, ss []int64
	for i, c := range currencies {
		j := slices.Index(cs, c)
		if j < 0 {
			cs, vs, ss = append(cs, c), append(vs, 0), append(ss, 0)
			j = len(cs) - 1
		}
		vs[j] += values[i]
		ss[j] += spends[i]
	}
	return cs, vs, ss
}

// keys are the group key expressions of a and their arguments.
func keys(a analytics.Query, timeCol string) (k1, k2 string, args []any, err error) {
	if a.Dimension == analytics.Bucket {
		if a.Granularity != analytics.Minute {
			args = append(args, a.Location.String())
		}
		return bucketKey(a.Granularity, timeCol), "''", args, nil
	}
	exprs, ok := rawKeys[a.Dimension]
	if !ok {
		return "", "", nil, fmt.Errorf("aggregate: dimension %d unknown", a.Dimension)
	}
	k1, k2 = exprs[0], exprs[1]
	switch {
	case a.Dimension == analytics.Property:
		args = append(args, a.PropertyKey)
	case (a.Dimension == analytics.Campaign || a.Dimension == analytics.CampaignVariant) && len(a.CampaignIDs) == 1:
		// One campaign: its id is a constant, not a key ClickHouse hashes on every row.
		k1 = "?"
		args = append(args, a.CampaignIDs[0])
	}
	return k1, k2, args, nil
}

// usersFunc is the distinct-count function of a and the rollup's state column for it:
// uniqCombined, or uniqExact when a.ExactUsers (the rollup keeps both states).
func usersFunc(a analytics.Query) (uniq, state string) {
	if a.ExactUsers {
		return "uniqExact", "users"
	}
	return "uniqCombined", "users_approx"
}

// tail is what follows the GROUP BY of the outermost query: the total, the top-N order.
func tail(a analytics.Query) string {
	var sql string
	if a.Total {
		sql += ` WITH TOTALS`
	}
	if a.Limit > 0 {
		sql += ` ORDER BY ` + orderColumns[a.OrderBy] + ` DESC, k1, k2 LIMIT ` + strconv.Itoa(a.Limit)
	}
	return sql
}

// OnePassSQL is the SQL and arguments Aggregate runs first for a rollup query: one group per
// key, each stored distinct-user state merged once, straight into its group's. Its amounts
// are those of the group's one currency (of its rows with a currency: events without a value
// have none); its last column counts those currencies, and where a group has more than one
// Aggregate asks AggregateSQL instead. Reading the currency column, not the finalized amount
// of every row, saves about 1 ms of a campaign's 8 ms summary (bench data); a currency whose
// amounts are all zero only sends its group the per-currency way, with the same answer.
func OnePassSQL(a analytics.Query, t Tables) (string, []any, error) {
	k1, k2, args, err := keys(a, "hour")
	if err != nil {
		return "", nil, err
	}
	uniq, state := usersFunc(a)
	where, whereArgs := scope(a, "hour")
	args = append(args, whereArgs...)
	return `SELECT ` + k1 + ` AS k1, ` + k2 + ` AS k2, toInt64(countMerge(events)) AS m_events,
			toInt64(countMergeIf(events, type = 'impression')) AS m_impressions, toInt64(countMergeIf(events, type = 'click')) AS m_clicks,
			toInt64(countMergeIf(events, type = 'conversion')) AS m_conversions, toInt64(` + uniq + `Merge(` + state + `)) AS m_users,
			[anyIf(currency, currency != '')] AS currencies,
			[sumMergeIf(value_micros, type = 'conversion')] AS values, [sumMergeIf(value_micros, type IN ('impression', 'click'))] AS spends,
			values[1] AS m_value, spends[1] AS m_spend, toUInt64(uniqExactIf(currency, currency != '')) AS currency_count
		FROM ` + t.Hourly + ` WHERE ` + where + ` GROUP BY k1, k2` + tail(a), args, nil
}

// AggregateSQL is the SQL and arguments Aggregate runs for a raw query, and for a rollup query
// whose one pass (OnePassSQL) found a group with amounts in several currencies. The inner
// query yields, per group key and currency, the counts, sums and a distinct-users state; the
// outer one merges the currencies of a group (and, for a.Total, all the groups, WITH TOTALS).
// The raw table is read without FINAL — the writer stores each event once — and within the
// sort key's ranges: the tenant, the campaigns, the time range (and the months of event_date
// it spans, for partition pruning).
func AggregateSQL(a analytics.Query, t Tables) (string, []any, error) {
	timeCol := "event_time"
	if a.Rollup {
		timeCol = "hour"
	}
	k1, k2, args, err := keys(a, timeCol)
	if err != nil {
		return "", nil, err
	}
	uniq, state := usersFunc(a)
	var inner string
	if a.Rollup {
		where, whereArgs := scope(a, timeCol)
		args = append(args, whereArgs...)
		inner = `SELECT ` + k1 + ` AS k1, ` + k2 + ` AS k2, currency,
				countMergeIf(events, type = 'impression') AS i_impressions, countMergeIf(events, type = 'click') AS i_clicks,
				countMergeIf(events, type = 'conversion') AS i_conversions, countMerge(events) AS i_events,
				sumMergeIf(value_micros, type = 'conversion') AS i_value, sumMergeIf(value_micros, type IN ('impression', 'click')) AS i_spend,
				` + uniq + `MergeState(` + state + `) AS i_users
			FROM ` + t.Hourly + ` WHERE ` + where + ` GROUP BY k1, k2, currency`
	} else {
		where, whereArgs := rawScope(a)
		args = append(args, whereArgs...)
		inner = `SELECT ` + k1 + ` AS k1, ` + k2 + ` AS k2, currency,
				countIf(type = 'impression') AS i_impressions, countIf(type = 'click') AS i_clicks,
				countIf(type = 'conversion') AS i_conversions, count() AS i_events,
				sumIf(value_micros, type = 'conversion') AS i_value, sumIf(value_micros, type IN ('impression', 'click')) AS i_spend,
				` + uniq + `State(if(user_id != '', user_id, anonymous_id)) AS i_users
			FROM ` + t.Events + ` WHERE ` + where + ` GROUP BY k1, k2, currency`
	}
	return `SELECT k1, k2, toInt64(sum(i_events)) AS m_events, toInt64(sum(i_impressions)) AS m_impressions,
			toInt64(sum(i_clicks)) AS m_clicks, toInt64(sum(i_conversions)) AS m_conversions,
			toInt64(` + uniq + `Merge(i_users)) AS m_users, groupArray(currency) AS currencies,
			groupArray(toInt64(i_value)) AS values, groupArray(toInt64(i_spend)) AS spends,
			sum(i_value) AS m_value, sum(i_spend) AS m_spend, toUInt64(0) AS currency_count
		FROM (` + inner + `) GROUP BY k1, k2` + tail(a), args, nil
}

// scope is the WHERE clause every query starts with: the tenant, the time range, campaigns.
func scope(a analytics.Query, timeCol string) (string, []any) {
	where := "tenant_id = ? AND " + timeCol + " >= ?"
	args := []any{a.TenantID, a.Start}
	if !a.OpenEnd {
		where += " AND " + timeCol + " < ?"
		args = append(args, a.End)
	}
	switch len(a.CampaignIDs) {
	case 0:
	case 1: // cheaper than IN with one element, row by row
		where += " AND campaign_id = ?"
		args = append(args, a.CampaignIDs[0])
	default:
		ids := make([]any, len(a.CampaignIDs))
		for i, id := range a.CampaignIDs {
			ids[i] = id
		}
		where += " AND campaign_id IN ?"
		args = append(args, ch.GroupSet{Value: ids})
	}
	return where, args
}

// rawScope is scope over the raw table, plus the event dates of the range, which select the
// partitions (months) to read: the time range alone does not, the partition key being
// event_date's. The dates have a day to spare each side, so that they never leave out an event
// whatever zone its event_date was taken in (the writer's is UTC).
func rawScope(a analytics.Query) (string, []any) {
	where, args := scope(a, "event_time")
	where += " AND event_date >= toDate(?)"
	args = append(args, eventDate(a.Start.AddDate(0, 0, -1)))
	if !a.OpenEnd {
		where += " AND event_date <= toDate(?)"
		args = append(args, eventDate(a.End.AddDate(0, 0, 1)))
	}
	return where, args
}

// eventDate is t's UTC date as ClickHouse parses a Date.
func eventDate(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// Funnel implements analytics.Store with windowFunnel over the corrected event time: a user
// reaches step n when steps 1…n happened in order within the window, step 1 inside the range.
func (q *Queries) Funnel(ctx context.Context, f analytics.FunnelQuery) ([]int64, error) {
	if err := requireTenant(f.TenantID); err != nil {
		return nil, err
	}
	sql, args := FunnelSQL(f, q.tables())
	rows, err := q.conn.Query(q.settings(ctx), sql, args...)
	if err != nil {
		return nil, q.queryError(ctx, "funnel", err)
	}
	defer rows.Close()
	reached := make([]int64, len(f.Steps))
	for rows.Next() {
		var level uint8
		var n uint64
		if err := rows.Scan(&level, &n); err != nil {
			return nil, fmt.Errorf("funnel: scan: %w", err)
		}
		// Users whose furthest step is level reached every step up to it.
		for i := 0; i < int(level) && i < len(reached); i++ {
			reached[i] += int64(n)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, q.queryError(ctx, "funnel", err)
	}
	return reached, nil
}

// FunnelSQL is the SQL and arguments Funnel runs for f. Over several shards each sends its
// subjects' windowFunnel states and the server the query entered merges them: exact wherever
// a subject's events are. distributed_group_by_no_merge (each shard's levels counted as they
// are) would send less, but count a subject twice whenever its events are on two shards, as
// while a partition's rows are moved to a new shard (docs/operations.md); it measured at most
// about twice as fast on 100,000 subjects, so it is not used.
func FunnelSQL(f analytics.FunnelQuery, t Tables) (string, []any) {
	conds := make([]string, len(f.Steps))
	var condArgs []any
	for i, s := range f.Steps {
		c := "name = ?"
		condArgs = append(condArgs, s.EventName)
		if s.CampaignID != "" {
			c += " AND campaign_id = ?"
			condArgs = append(condArgs, s.CampaignID)
		}
		if i == 0 && !f.OpenEnd {
			c += " AND event_time < ?"
			condArgs = append(condArgs, f.End)
		}
		conds[i] = "(" + c + ")"
	}
	args := []any{int64(f.Window / time.Second)}
	args = append(args, condArgs...)
	// The events of the range and the window after it, no FINAL (see AggregateSQL).
	where, whereArgs := rawScope(analytics.Query{TenantID: f.TenantID, Start: f.Start, End: f.End.Add(f.Window), OpenEnd: f.OpenEnd})
	args = append(args, whereArgs...)
	args = append(args, condArgs...)
	sql := `SELECT level, count() FROM (
			SELECT if(user_id != '', user_id, anonymous_id) AS subject, windowFunnel(?)(event_time, ` + strings.Join(conds, ", ") + `) AS level
			FROM ` + t.Events + `
			WHERE ` + where + ` AND (` + strings.Join(conds, " OR ") + `)
			GROUP BY subject)
		WHERE level > 0 GROUP BY level`
	return sql, args
}

// settings puts the configured limits on a query. The reader user's profile carries the same
// limits as defaults (scripts/devenv.sh, deploy/clickhouse-init.sh) with readonly=2: reads and
// setting changes, no writes and no DDL. readonly=1 would refuse these per-query settings (the
// flags -query-timeout etc. would stop working), and ClickHouse 18.16 has no settings
// constraints to cap them, so on 18.16 the profile sets the defaults and this service the
// values; current ClickHouse (compose) also caps them with constraints in the profile.
func (q *Queries) settings(ctx context.Context) context.Context {
	// ClickHouse 18.16 takes only integer settings over the native protocol; the overflow
	// modes are left at their default, "throw". A query reads its ranges with every thread
	// (max_threads, the cores) from 2,048 rows on, not 163,840: a rollup query reads some
	// thousands of rows, whose distinct-user states take most of its time to merge.
	return ch.Context(ctx, ch.WithSettings(ch.Settings{
		"max_execution_time":                      int(q.limits.MaxExecutionTime / time.Second),
		"max_result_rows":                         q.limits.MaxResultRows,
		"max_memory_usage":                        int(q.limits.MaxMemory),
		"merge_tree_min_rows_for_concurrent_read": 2048,
	}))
}

// ClickHouse error codes that mean a query hit a limit rather than a fault.
var limitCodes = map[int32]bool{
	159: true, // TIMEOUT_EXCEEDED
	241: true, // MEMORY_LIMIT_EXCEEDED
	396: true, // TOO_MANY_ROWS_OR_BYTES
	158: true, // TOO_MANY_ROWS
}

// unknownZoneCodes are the exceptions ClickHouse raises for a time zone it cannot load:
// POCO_EXCEPTION from 18.16's zone loader, BAD_ARGUMENTS from current versions.
var unknownZoneCodes = map[int32]bool{1000: true, 36: true}

// queryError classifies a failed query: a limit it hit, a time zone ClickHouse lacks, or a
// server it could not reach (see storeError); anything else is unexpected.
func (q *Queries) queryError(ctx context.Context, what string, err error) error {
	var ex *ch.Exception
	if errors.As(err, &ex) && limitCodes[ex.Code] {
		return analytics.ErrTooExpensive
	}
	if errors.As(err, &ex) && unknownZoneCodes[ex.Code] && strings.Contains(ex.Message, "time zone") {
		// A second line behind analytics.LoadTimeZone: a zone Go knows and ClickHouse not.
		return analytics.ErrTimeZoneUnsupported
	}
	return q.storeError(ctx, what, err)
}

// storeError wraps err with what failed. When ClickHouse could not be reached the error is
// also analytics.ErrStoreUnavailable (UNAVAILABLE with a retry delay, the answer callers retry
// on) and its cause is logged here at WARN: the caller only sees the generic message, and an
// outage of a dependency is no fault of this service, so it must not page as an ERROR would.
func (q *Queries) storeError(ctx context.Context, what string, err error) error {
	if !unreachable(err) {
		return fmt.Errorf("%s: %w", what, err)
	}
	q.logger.WarnContext(ctx, "analytics store unreachable", "op", what, "err", err.Error())
	return fmt.Errorf("%s: %w: %w", what, analytics.ErrStoreUnavailable, err)
}

// unreachable reports whether err says the ClickHouse server could not be reached or went away,
// rather than that it refused or failed the query. clickhouse-go returns, for a server that is
// down, the dial's *net.OpError (connection refused, or an i/o timeout during the handshake);
// for one that went away mid-query, io.EOF or a reset or broken connection wrapped in its own
// text; and ErrAcquireConnTimeout when no connection could be had in time. A ClickHouse
// exception is an answer from the server, and the caller's own cancellation or deadline stays
// what it is (CANCELLED, DEADLINE_EXCEEDED).
func unreachable(err error) bool {
	var ex *ch.Exception
	if errors.As(err, &ex) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	for _, target := range []error{io.EOF, io.ErrUnexpectedEOF, net.ErrClosed, syscall.ECONNREFUSED, syscall.ECONNRESET,
		syscall.ECONNABORTED, syscall.EPIPE, syscall.EHOSTUNREACH, syscall.ENETUNREACH, ch.ErrAcquireConnTimeout} {
		if errors.Is(err, target) {
			return true
		}
	}
	var netErr *net.OpError
	return errors.As(err, &netErr)
}

// requireTenant refuses a request without a tenant. Every query binds tenant_id, and the rows
// of the empty tenant are the writer's commit rows (clickhouse.EventSink): no answer may count
// them, and no deletion touch them. Ingest refuses an event without a tenant.
func requireTenant(tenant string) error {
	if tenant == "" {
		return apperr.New(apperr.Invalid, "NO_TENANT", "an analytics request needs a tenant")
	}
	return nil
}

// Delete implements analytics.Store with ALTER TABLE … DELETE mutations, tagged with a hash
// of the request so a repeated call finds its mutation instead of starting another. A time
// range also deletes the rollup hours it covers whole; a subject's events leave the rollups'
// counts (aggregates without identifiers) but their distinct-user states keep hashes until the
// rollup hours are rebuilt — see docs/pipeline.md, "Rollups". The mutations run on the shard of
// every shard (events_local, events_hourly_local: a Distributed table takes no mutation): the
// status adds up the shards' remaining rows, is done when every shard's is, and names the first
// shard's mutation still running (else the first shard's).
func (q *Queries) Delete(ctx context.Context, d analytics.Deletion) (analytics.DeletionStatus, error) {
	var st analytics.DeletionStatus
	if err := requireTenant(d.TenantID); err != nil {
		return st, err
	}
	shards := q.shards
	if len(shards) == 0 {
		shards = []driver.Conn{q.writer}
	}
	st.Done = true
	for i, conn := range shards {
		one, err := q.deleteOnShard(ctx, conn, d)
		if err != nil {
			return analytics.DeletionStatus{}, err
		}
		st.RemainingRows += one.RemainingRows
		if i == 0 || (st.Done && !one.Done) {
			st.MutationID = one.MutationID
		}
		st.Done = st.Done && one.Done
	}
	return st, nil
}

// deleteOnShard is Delete on the shard conn connects to.
func (q *Queries) deleteOnShard(ctx context.Context, conn driver.Conn, d analytics.Deletion) (analytics.DeletionStatus, error) {
	var st analytics.DeletionStatus
	where, args := "tenant_id = ? AND (user_id = ? OR anonymous_id = ?)", []any{d.TenantID, d.SubjectID, d.SubjectID}
	if d.SubjectID == "" {
		where, args = "tenant_id = ? AND event_time >= ? AND event_time < ?", []any{d.TenantID, d.Start, d.End}
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%q %q %d %d", d.TenantID, d.SubjectID, d.Start.Unix(), d.End.Unix())))
	tag := "cmdel-" + hex.EncodeToString(sum[:8])
	var remaining uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM events_local WHERE "+where, args...).Scan(&remaining); err != nil {
		return st, q.storeError(ctx, "count rows to delete", err)
	}
	st.RemainingRows = int64(remaining)
	var isDone, found bool
	var err error
	if st.MutationID, isDone, found, err = q.mutation(ctx, conn, tag); err != nil {
		return st, err
	}
	if remaining == 0 && (!found || isDone) {
		st.Done = true
		return st, nil
	}
	if found && !isDone {
		return st, nil // still running
	}
	if err := conn.Exec(ctx, "ALTER TABLE events_local DELETE WHERE "+where+" AND ? != ''", append(args, tag)...); err != nil {
		return st, q.storeError(ctx, "delete events", err)
	}
	if d.SubjectID == "" {
		first, last := d.Start.Truncate(time.Hour), d.End.Truncate(time.Hour)
		if first.Before(d.Start) {
			first = first.Add(time.Hour)
		}
		if first.Before(last) {
			if err := conn.Exec(ctx, "ALTER TABLE events_hourly_local DELETE WHERE tenant_id = ? AND hour >= ? AND hour < ? AND ? != ''",
				d.TenantID, first, last, tag); err != nil {
				return st, q.storeError(ctx, "delete rollup hours", err)
			}
		}
	}
	st.MutationID, _, _, err = q.mutation(ctx, conn, tag)
	return st, err
}

// mutation finds the newest mutation of the events_local table tagged tag.
func (q *Queries) mutation(ctx context.Context, conn driver.Conn, tag string) (id string, done, found bool, err error) {
	var isDone uint8
	err = conn.QueryRow(ctx, `SELECT mutation_id, is_done FROM system.mutations
		WHERE database = currentDatabase() AND table = 'events_local' AND position(command, ?) > 0
		ORDER BY create_time DESC LIMIT 1`, tag).Scan(&id, &isDone)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", false, false, nil
	case err != nil:
		return "", false, false, q.storeError(ctx, "read mutations", err)
	}
	return id, isDone == 1, true, nil
}
