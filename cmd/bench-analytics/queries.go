package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

// What the Service does before it reaches the store, reproduced so that the direct runs send
// exactly the SQL the RPC sends: the range a request without a start resolves to, the first
// bucket of a series, and whether the rollups can answer (analytics.canUseRollup).

// defaultFrom is the start of a request without one: DefaultRange before the hour of now.
func defaultFrom(now time.Time) time.Time {
	return now.UTC().Truncate(time.Second).Truncate(time.Hour).Add(-analytics.DefaultLimits.DefaultRange)
}

// firstBucket is the start of the bucket holding from (analytics.bucketStarts' first).
func firstBucket(g analytics.Granularity, loc *time.Location, from time.Time) time.Time {
	l := from.In(loc)
	switch g {
	case analytics.Minute:
		return from.Truncate(time.Minute).UTC()
	case analytics.Hour:
		t := time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), 0, 0, 0, loc)
		if t.After(from) {
			t = t.Add(-time.Hour)
		}
		return t.UTC()
	}
	return time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, loc).UTC()
}

func wholeHour(t time.Time) bool { return t.Equal(t.Truncate(time.Hour)) }

// rollupAnswers is analytics.canUseRollup.
func rollupAnswers(q analytics.Query) bool {
	dims := []analytics.Dimension{analytics.NoDimension, analytics.Campaign, analytics.CampaignVariant, analytics.Bucket, analytics.EventType, analytics.Variant}
	if !slices.Contains(dims, q.Dimension) || !wholeHour(q.Start) || (!q.OpenEnd && !wholeHour(q.End)) {
		return false
	}
	if q.Dimension == analytics.Bucket {
		if q.Granularity == analytics.Minute {
			return false
		}
		for t := q.Start; t.Before(q.End.Add(24 * time.Hour)); t = t.Add(24 * time.Hour) {
			if t.After(q.End) {
				t = q.End
			}
			if _, off := t.In(q.Location).Zone(); off%3600 != 0 {
				return false
			}
		}
	}
	return true
}

func sourceOf(q analytics.Query) analyticsv1.DataSource {
	if q.Rollup {
		return analyticsv1.DataSource_DATA_SOURCE_ROLLUP
	}
	return analyticsv1.DataSource_DATA_SOURCE_RAW
}

func sourceName(s analyticsv1.DataSource) string {
	switch s {
	case analyticsv1.DataSource_DATA_SOURCE_ROLLUP:
		return "rollup"
	case analyticsv1.DataSource_DATA_SOURCE_RAW:
		return "raw"
	}
	return "?"
}

// A run returns a figure of its answer (events, or users for a funnel) to compare the two
// ways, and the source: the RPC's from its response (UNSPECIFIED when the response has none),
// the direct run's from the query it sent.
type run func(ctx context.Context) (figure int64, source analyticsv1.DataSource, err error)

type queryCase struct {
	name        string
	want        analyticsv1.DataSource
	rpc, direct run
}

type queryStats struct {
	name, source               string
	rpc50, rpc99, dir50, dir99 time.Duration
	runs, rpcFail, dirFail     int
}

// minRuns is the fewest timed runs each way, whatever the budget.
const minRuns = 5

// tooExpensive reports whether err is a query stopped at a ClickHouse limit (time, memory,
// rows): QUERY_TOO_EXPENSIVE from the RPC, the exception itself from a direct run.
func tooExpensive(err error) bool {
	if status.Code(err) == codes.ResourceExhausted {
		return true
	}
	var ex *ch.Exception
	return errors.As(err, &ex) && (ex.Code == 159 || ex.Code == 241 || ex.Code == 396 || ex.Code == 158)
}

// store runs SQL as the store does (the same settings) and reads every row into the types the
// store scans into.
type store struct {
	conn driver.Conn
}

func (s store) settings(ctx context.Context) context.Context {
	l := clickhouse.DefaultQueryLimits
	return ch.Context(ctx, ch.WithSettings(ch.Settings{
		"max_execution_time": int(l.MaxExecutionTime / time.Second),
		"max_result_rows":    l.MaxResultRows,
		"max_memory_usage":   int(l.MaxMemory),
	}))
}

// aggregate runs the queries one after the other (a summary's groups, then its total) and
// returns the events of the last one.
func (s store) aggregate(ctx context.Context, qs ...analytics.Query) (int64, analyticsv1.DataSource, error) {
	var events int64
	for _, q := range qs {
		sql, args, err := clickhouse.AggregateSQL(q)
		if err != nil {
			return 0, 0, err
		}
		rows, err := s.conn.Query(s.settings(ctx), sql, args...)
		if err != nil {
			return 0, 0, err
		}
		events = 0
		for rows.Next() {
			var r analytics.Aggregate
			var value, spend int64
			if err := rows.Scan(&r.K1, &r.K2, &r.Events, &r.Impressions, &r.Clicks, &r.Conversions, &r.UniqueUsers,
				&r.Currencies, &r.ConversionValue, &r.Spend, &value, &spend); err != nil {
				rows.Close()
				return 0, 0, err
			}
			events += r.Events
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return 0, 0, err
		}
	}
	return events, sourceOf(qs[0]), nil
}

func (s store) funnel(ctx context.Context, f analytics.FunnelQuery) (int64, analyticsv1.DataSource, error) {
	sql, args := clickhouse.FunnelSQL(f)
	rows, err := s.conn.Query(s.settings(ctx), sql, args...)
	if err != nil {
		return 0, 0, err
	}
	defer rows.Close()
	reached := make([]int64, len(f.Steps))
	for rows.Next() {
		var level uint8
		var n uint64
		if err := rows.Scan(&level, &n); err != nil {
			return 0, 0, err
		}
		for i := 0; i < int(level) && i < len(reached); i++ {
			reached[i] += int64(n)
		}
	}
	var users int64
	for _, n := range reached {
		users += n
	}
	return users, analyticsv1.DataSource_DATA_SOURCE_RAW, rows.Err()
}

func metricsEvents(m *analyticsv1.Metrics) int64 { return m.GetEvents() }

// cases are the query types, each as an RPC and as the SQL the Service sends for it.
func cases(c analyticsv1.AnalyticsServiceClient, s store, d dataset) []queryCase {
	big := d.Tenants[0]
	tenant := big.ID
	one := big.campaignIDs(1)
	ten := big.campaignIDs(10)
	berlin, _ := time.LoadLocation("Europe/Berlin")
	summary := func(ids []string, byVariant bool, src analyticsv1.DataSource) (run, run) {
		rpc := func(ctx context.Context) (int64, analyticsv1.DataSource, error) {
			r, err := c.GetCampaignSummary(ctx, &analyticsv1.GetCampaignSummaryRequest{CampaignIds: ids, ByVariant: byVariant, Source: src})
			return metricsEvents(r.GetTotal()), r.GetSource(), err
		}
		direct := func(ctx context.Context) (int64, analyticsv1.DataSource, error) {
			now := time.Now()
			q := analytics.Query{TenantID: tenant, CampaignIDs: ids, Start: defaultFrom(now), End: now.UTC().Truncate(time.Second), OpenEnd: true, Dimension: analytics.Campaign}
			if byVariant {
				q.Dimension = analytics.CampaignVariant
			}
			q.Rollup = src != analyticsv1.DataSource_DATA_SOURCE_RAW && rollupAnswers(q)
			total := q
			total.Dimension = analytics.NoDimension
			return s.aggregate(ctx, q, total)
		}
		return rpc, direct
	}
	series := func(g analytics.Granularity, tz string, loc *time.Location, start func() *time.Time) (run, run) {
		rpc := func(ctx context.Context) (int64, analyticsv1.DataSource, error) {
			req := &analyticsv1.GetMetricSeriesRequest{Granularity: analyticsv1.Granularity(g), TimeZone: tz}
			if t := start(); t != nil {
				req.StartTime = timestamppb.New(*t)
			}
			r, err := c.GetMetricSeries(ctx, req)
			var events int64
			for _, b := range r.GetBuckets() {
				events += metricsEvents(b.GetMetrics())
			}
			return events, r.GetSource(), err
		}
		direct := func(ctx context.Context) (int64, analyticsv1.DataSource, error) {
			now := time.Now()
			from := defaultFrom(now)
			if t := start(); t != nil {
				from = *t
			}
			q := analytics.Query{TenantID: tenant, Start: firstBucket(g, loc, from), End: now.UTC().Truncate(time.Second), OpenEnd: true,
				Dimension: analytics.Bucket, Granularity: g, Location: loc}
			q.Rollup = rollupAnswers(q)
			return s.aggregate(ctx, q)
		}
		return rpc, direct
	}
	breakdown := func(dim analyticsv1.Dimension, key string, metric analyticsv1.Metric) (run, run) {
		rpc := func(ctx context.Context) (int64, analyticsv1.DataSource, error) {
			r, err := c.GetBreakdown(ctx, &analyticsv1.GetBreakdownRequest{Dimension: dim, PropertyKey: key, Metric: metric})
			var events int64
			for _, row := range r.GetRows() {
				events += metricsEvents(row.GetMetrics())
			}
			return events, 0, err
		}
		dims := map[analyticsv1.Dimension]analytics.Dimension{analyticsv1.Dimension_DIMENSION_PROPERTY: analytics.Property, analyticsv1.Dimension_DIMENSION_CAMPAIGN: analytics.Campaign}
		metrics := map[analyticsv1.Metric]analytics.Metric{analyticsv1.Metric_METRIC_UNSPECIFIED: analytics.MetricEvents, analyticsv1.Metric_METRIC_CONVERSIONS: analytics.MetricConversions}
		direct := func(ctx context.Context) (int64, analyticsv1.DataSource, error) {
			now := time.Now()
			q := analytics.Query{TenantID: tenant, Start: defaultFrom(now), End: now.UTC().Truncate(time.Second), OpenEnd: true, Dimension: dims[dim], PropertyKey: key,
				OrderBy: metrics[metric], Limit: 10}
			q.Rollup = rollupAnswers(q)
			return s.aggregate(ctx, q)
		}
		return rpc, direct
	}
	steps := []string{"view", "tap", "purchase"}
	funnelRPC := func(ctx context.Context) (int64, analyticsv1.DataSource, error) {
		req := &analyticsv1.GetFunnelRequest{WindowSeconds: 86400}
		for _, n := range steps {
			req.Steps = append(req.Steps, &analyticsv1.FunnelStep{EventName: n})
		}
		r, err := c.GetFunnel(ctx, req)
		var users int64
		for _, st := range r.GetSteps() {
			users += st.GetUsers()
		}
		return users, 0, err
	}
	funnelDirect := func(ctx context.Context) (int64, analyticsv1.DataSource, error) {
		now := time.Now()
		f := analytics.FunnelQuery{TenantID: tenant, Start: defaultFrom(now), End: now.UTC().Truncate(time.Second), OpenEnd: true, Window: 24 * time.Hour}
		for _, n := range steps {
			f.Steps = append(f.Steps, analytics.FunnelStep{EventName: n})
		}
		return s.funnel(ctx, f)
	}
	noStart := func() *time.Time { return nil }
	sixHours := func() *time.Time { t := time.Now().UTC().Truncate(time.Minute).Add(-6 * time.Hour); return &t }
	const (
		rollup = analyticsv1.DataSource_DATA_SOURCE_ROLLUP
		raw    = analyticsv1.DataSource_DATA_SOURCE_RAW
		auto   = analyticsv1.DataSource_DATA_SOURCE_UNSPECIFIED
	)
	var out []queryCase
	addCase := func(name string, want analyticsv1.DataSource, rpc, direct run) {
		out = append(out, queryCase{name, want, rpc, direct})
	}
	r, dr := summary(one, false, auto)
	addCase("summary, 1 campaign, 7 days", rollup, r, dr)
	r, dr = summary(ten, true, auto)
	addCase("summary, 10 campaigns by variant", rollup, r, dr)
	r, dr = summary(one, false, raw)
	addCase("summary, 1 campaign, forced raw", raw, r, dr)
	r, dr = series(analytics.Hour, "", time.UTC, noStart)
	addCase("series, hour, 7 days", rollup, r, dr)
	r, dr = series(analytics.Day, "Europe/Berlin", berlin, noStart)
	addCase("series, day in Europe/Berlin, 7 days", rollup, r, dr)
	r, dr = series(analytics.Minute, "", time.UTC, sixHours)
	addCase("series, minute, last 6 hours", raw, r, dr)
	r, dr = breakdown(analyticsv1.Dimension_DIMENSION_PROPERTY, "country", analyticsv1.Metric_METRIC_UNSPECIFIED)
	addCase("breakdown by property country", raw, r, dr)
	r, dr = breakdown(analyticsv1.Dimension_DIMENSION_CAMPAIGN, "", analyticsv1.Metric_METRIC_CONVERSIONS)
	addCase("breakdown by campaign by conversions", rollup, r, dr)
	addCase("funnel view→tap→purchase, 1-day window", raw, funnelRPC, funnelDirect)
	return out
}

// queries times every case: a warm-up run each way first (comparing the RPC's answer and
// source with the direct run's), then RPC and direct runs alternate, so both see the same
// server state, until -iterations each or -query-budget (at least minRuns each).
func (b *bench) queries(ctx context.Context, e *env, d dataset, conn driver.Conn) ([]queryStats, error) {
	rctx, err := e.as(ctx, d.Tenants[0].ID, rbac.Analyst)
	if err != nil {
		return nil, err
	}
	fmt.Printf("\nQueries (tenant %s; RPC over mTLS with an analyst JWT vs the same SQL through clickhouse-go; up to %d runs each way, %s budget)\n",
		d.Tenants[0].ID, b.cfg.iterations, b.cfg.budget)
	var stats []queryStats
	for _, qc := range cases(e.client, store{conn}, d) {
		progress("%s (%s)", qc.name, machine())
		if err := check(rctx, ctx, qc); err != nil { // also the warm-up, each way
			return nil, err
		}
		var rpcLat, dirLat []time.Duration
		var rpcFail, dirFail int
		var firstFail error
		start := time.Now()
		for i := 0; i < b.cfg.iterations && (i < minRuns || time.Since(start) < b.cfg.budget); i++ {
			timed := func(f run, ctx context.Context, into *[]time.Duration, failed *int) error {
				t := time.Now()
				_, _, err := f(ctx)
				switch {
				case err == nil:
					*into = append(*into, time.Since(t))
				case tooExpensive(err):
					*failed++
					if firstFail == nil {
						firstFail = err
					}
				default:
					return fmt.Errorf("%s: %w", qc.name, err)
				}
				return nil
			}
			first, second := func() error { return timed(qc.rpc, rctx, &rpcLat, &rpcFail) }, func() error { return timed(qc.direct, ctx, &dirLat, &dirFail) }
			if i%2 == 1 {
				first, second = second, first
			}
			if err := first(); err != nil {
				return nil, err
			}
			if err := second(); err != nil {
				return nil, err
			}
		}
		st := queryStats{name: qc.name, source: sourceName(qc.want), rpc50: percentile(rpcLat, 0.5), rpc99: percentile(rpcLat, 0.99),
			dir50: percentile(dirLat, 0.5), dir99: percentile(dirLat, 0.99), runs: len(rpcLat) + rpcFail, rpcFail: rpcFail, dirFail: dirFail}
		stats = append(stats, st)
		label := fmt.Sprintf("%s [%s]", qc.name, st.source)
		runs, p99 := "", ""
		if st.runs < b.cfg.iterations {
			runs = fmt.Sprintf("(%d runs each way: budget reached)", st.runs)
			if st.runs < 100 {
				p99 = "(the slowest run)"
			}
		}
		if rpcFail+dirFail > 0 {
			b.add(label+": stopped at a query limit", float64(rpcFail+dirFail), "runs",
				fmt.Sprintf("(RPC %d, direct %d of %d each; left out of the percentiles: %v)", rpcFail, dirFail, st.runs, firstFail))
		}
		if len(rpcLat) == 0 || len(dirLat) == 0 {
			continue
		}
		b.add(label+": RPC p50", ms(st.rpc50), "ms", runs)
		b.add(label+": RPC p99", ms(st.rpc99), "ms", p99)
		b.add(label+": direct p50", ms(st.dir50), "ms", "")
		b.add(label+": direct p99", ms(st.dir99), "ms", p99)
		limit := overheadLimit(st.dir50)
		b.add(label+": RPC/direct p50", float64(st.rpc50)/float64(st.dir50), "x",
			fmt.Sprintf("(target RPC p50 ≤ 1.15×direct+10 ms = %.1f ms: %s)", ms(limit), verdict(st.rpc50 <= limit)))
	}
	return stats, nil
}

// check runs a case once each way and fails when the answers or the sources differ: the
// direct run would not be timing what the RPC runs. An hour may turn between the two runs
// (the default range moves), so a difference is retried; so is a run stopped at a query
// limit (a busy machine), and when no pair completes the case is timed unchecked.
func check(rctx, ctx context.Context, qc queryCase) error {
	var msg string
	for range 3 {
		got, src, err := qc.rpc(rctx)
		if err != nil && !tooExpensive(err) {
			return fmt.Errorf("%s through the RPC: %w", qc.name, err)
		}
		rpcErr := err
		want, dsrc, err := qc.direct(ctx)
		if err != nil && !tooExpensive(err) {
			return fmt.Errorf("%s directly: %w", qc.name, err)
		}
		if rpcErr != nil || err != nil {
			msg = fmt.Sprintf("stopped at a query limit (RPC: %v; direct: %v)", rpcErr, err)
			continue
		}
		switch {
		case dsrc != qc.want:
			return fmt.Errorf("%s: the direct query uses the %s tables, the case expects %s", qc.name, sourceName(dsrc), sourceName(qc.want))
		case src != 0 && src != dsrc:
			return fmt.Errorf("%s: the RPC answered from %s, the direct query from %s", qc.name, sourceName(src), sourceName(dsrc))
		case got != want:
			msg = fmt.Sprintf("the RPC's answer (%d) differs from the direct query's (%d)", got, want)
			continue
		case got == 0:
			return fmt.Errorf("%s: empty answer", qc.name)
		}
		how := "from the response"
		if src == 0 {
			how = "the response has no source field; from the Service's rules"
		}
		progress("  source %s (%s); both answer %d", sourceName(dsrc), how, got)
		return nil
	}
	if strings.HasPrefix(msg, "stopped") {
		progress("  not compared: %s", msg)
		return nil
	}
	return fmt.Errorf("%s: %s", qc.name, msg)
}

// summary prints the figures against the targets in one table.
func (b *bench) summary(stats []queryStats, f freshStats) {
	fmt.Printf("\nTargets\n")
	var rollup1 queryStats
	for _, s := range stats {
		if s.name == "summary, 1 campaign, 7 days" {
			rollup1 = s
		}
	}
	b.add("summary of 1 campaign from rollups: RPC p50", ms(rollup1.rpc50), "ms",
		fmt.Sprintf("(target ≤ 50 ms at %s events: %s)", thousands(b.cfg.events), verdict(rollup1.rpc50 > 0 && rollup1.rpc50 <= 50*time.Millisecond)))
	met := 0
	for _, s := range stats {
		if s.rpc50 > 0 && s.dir50 > 0 && s.rpc50 <= overheadLimit(s.dir50) {
			met++
		}
	}
	b.add("queries with RPC p50 ≤ 1.15×direct p50 + 10 ms", float64(met), "of", fmt.Sprintf("%d", len(stats)))
	b.add("freshness p99", ms(f.p99), "ms", fmt.Sprintf("(target ≤ 2000 ms: %s)", verdict(f.p99 <= 2*time.Second)))
	fmt.Println()
	fmt.Printf("  %-42s %-6s %9s %9s %10s %10s %6s  %s\n", "query", "source", "RPC p50", "RPC p99", "direct p50", "direct p99", "ratio", "RPC p50 ≤ 1.15×direct+10ms")
	for _, s := range stats {
		if s.rpc50 == 0 || s.dir50 == 0 {
			fmt.Printf("  %-42s %-6s every run stopped at a query limit on one side (RPC %d, direct %d of %d)\n", s.name, s.source, s.rpcFail, s.dirFail, s.runs)
			continue
		}
		limit := overheadLimit(s.dir50)
		fmt.Printf("  %-42s %-6s %6.1f ms %6.1f ms %7.1f ms %7.1f ms %6.2f  %s (≤ %.1f ms)\n", s.name, s.source, ms(s.rpc50), ms(s.rpc99),
			ms(s.dir50), ms(s.dir99), float64(s.rpc50)/float64(s.dir50), verdict(s.rpc50 <= limit), ms(limit))
	}
}

// overheadLimit is the target for the RPC's p50 given the direct p50: 1.15 × direct + 10 ms.
func overheadLimit(direct time.Duration) time.Duration {
	return time.Duration(1.15*float64(direct)) + 10*time.Millisecond
}

func thousands(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
