package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

// recorder is the store under the bench's analytics service: it passes every query on and
// keeps those of the calls since the last reset, so a direct run replays exactly what an RPC
// sent to ClickHouse — nothing of the service's planning is reproduced here.
type recorder struct {
	analytics.Store
	mu      sync.Mutex
	aggs    []analytics.Query
	funnels []analytics.FunnelQuery
}

func (r *recorder) Aggregate(ctx context.Context, q analytics.Query) ([]analytics.Aggregate, error) {
	r.mu.Lock()
	r.aggs = append(r.aggs, q)
	r.mu.Unlock()
	return r.Store.Aggregate(ctx, q)
}

func (r *recorder) Funnel(ctx context.Context, f analytics.FunnelQuery) ([]int64, error) {
	r.mu.Lock()
	r.funnels = append(r.funnels, f)
	r.mu.Unlock()
	return r.Store.Funnel(ctx, f)
}

// reset forgets what was recorded; take returns it.
func (r *recorder) reset() { r.mu.Lock(); r.aggs, r.funnels = nil, nil; r.mu.Unlock() }

func (r *recorder) take() ([]analytics.Query, []analytics.FunnelQuery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.aggs), slices.Clone(r.funnels)
}

// replay is the direct run of what one RPC sent: the same queries, in the same order, through
// the store's SQL and clickhouse-go on the bench's own connection (no gRPC, no service).
func replay(direct analytics.Store, aggs []analytics.Query, funnels []analytics.FunnelQuery) run {
	return func(ctx context.Context) (int64, analyticsv1.DataSource, error) {
		var figure int64
		source := analyticsv1.DataSource_DATA_SOURCE_RAW
		for _, q := range aggs {
			rows, err := direct.Aggregate(ctx, q)
			if err != nil {
				return 0, 0, err
			}
			figure = 0
			for _, r := range rows {
				if !r.Total { // the groups' figure, as the RPC's rows
					figure += r.Events
				}
			}
			if q.Rollup {
				source = analyticsv1.DataSource_DATA_SOURCE_ROLLUP
			}
		}
		for _, f := range funnels {
			users, err := direct.Funnel(ctx, f)
			if err != nil {
				return 0, 0, err
			}
			figure = 0
			for _, n := range users {
				figure += n
			}
		}
		return figure, source, nil
	}
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
	ref         reference
	reference   run
	// target is issue 12's bound on the RPC's p50 (0: none).
	target time.Duration
}

type queryStats struct {
	name, source               string
	rpc50, rpc99, dir50, dir99 time.Duration
	ref50, ref99               time.Duration
	target                     time.Duration
	runs, rpcFail, dirFail     int
	refFail                    int
}

// minRuns is the fewest timed runs each way, whatever the budget.
const minRuns = 5

// tooExpensive reports whether err is a query stopped at a ClickHouse limit (time, memory,
// rows): QUERY_TOO_EXPENSIVE from the RPC, the store's error from a direct run.
func tooExpensive(err error) bool {
	return status.Code(err) == codes.ResourceExhausted || errors.Is(err, analytics.ErrTooExpensive)
}

func metricsEvents(m *analyticsv1.Metrics) int64 { return m.GetEvents() }

// cases are the query types, each as an RPC; check derives each one's direct run from what
// the RPC sent.
func cases(c analyticsv1.AnalyticsServiceClient, big tenantData) []queryCase {
	summary := func(ids []string, byVariant bool, src analyticsv1.DataSource) run {
		return func(ctx context.Context) (int64, analyticsv1.DataSource, error) {
			r, err := c.GetCampaignSummary(ctx, &analyticsv1.GetCampaignSummaryRequest{CampaignIds: ids, ByVariant: byVariant, Source: src})
			return metricsEvents(r.GetTotal()), r.GetSource(), err
		}
	}
	series := func(g analyticsv1.Granularity, tz string, start func() *time.Time) run {
		return func(ctx context.Context) (int64, analyticsv1.DataSource, error) {
			req := &analyticsv1.GetMetricSeriesRequest{Granularity: g, TimeZone: tz}
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
	}
	breakdown := func(dim analyticsv1.Dimension, key string, metric analyticsv1.Metric) run {
		return func(ctx context.Context) (int64, analyticsv1.DataSource, error) {
			r, err := c.GetBreakdown(ctx, &analyticsv1.GetBreakdownRequest{Dimension: dim, PropertyKey: key, Metric: metric})
			var events int64
			for _, row := range r.GetRows() {
				events += metricsEvents(row.GetMetrics())
			}
			return events, 0, err
		}
	}
	funnel := func(ctx context.Context) (int64, analyticsv1.DataSource, error) {
		req := &analyticsv1.GetFunnelRequest{WindowSeconds: 86400}
		for _, n := range []string{"view", "tap", "purchase"} {
			req.Steps = append(req.Steps, &analyticsv1.FunnelStep{EventName: n})
		}
		r, err := c.GetFunnel(ctx, req)
		var users int64
		for _, st := range r.GetSteps() {
			users += st.GetUsers()
		}
		return users, 0, err
	}
	noStart := func() *time.Time { return nil }
	sixHours := func() *time.Time { t := time.Now().UTC().Truncate(time.Minute).Add(-6 * time.Hour); return &t }
	const (
		rollup = analyticsv1.DataSource_DATA_SOURCE_ROLLUP
		raw    = analyticsv1.DataSource_DATA_SOURCE_RAW
		auto   = analyticsv1.DataSource_DATA_SOURCE_UNSPECIFIED
	)
	one, ten := big.CampaignIDs(1), big.CampaignIDs(10)
	milli := time.Millisecond
	return []queryCase{
		{name: "summary, 1 campaign, 7 days", want: rollup, rpc: summary(one, false, auto), ref: refRollupSummary("", ""), target: 10 * milli},
		{name: "summary, 10 campaigns by variant", want: rollup, rpc: summary(ten, true, auto), ref: refRollupSummary("campaign_id, variant, ", " WITH TOTALS"), target: 40 * milli},
		{name: "summary, 1 campaign, forced raw", want: raw, rpc: summary(one, false, raw), ref: refRawSummary, target: 100 * milli},
		{name: "series, hour, 7 days", want: rollup, rpc: series(analyticsv1.Granularity_GRANULARITY_HOUR, "", noStart), ref: refRollupSeries},
		{name: "series, day in Europe/Berlin, 7 days", want: rollup, rpc: series(analyticsv1.Granularity_GRANULARITY_DAY, "Europe/Berlin", noStart), ref: refRollupSeries},
		{name: "series, minute, last 6 hours", want: raw, rpc: series(analyticsv1.Granularity_GRANULARITY_MINUTE, "", sixHours), ref: refMinuteSeries, target: 300 * milli},
		{name: "breakdown by property country", want: raw, rpc: breakdown(analyticsv1.Dimension_DIMENSION_PROPERTY, "country", analyticsv1.Metric_METRIC_UNSPECIFIED), ref: refPropertyBreakdown, target: 1500 * milli},
		{name: "breakdown by campaign by conversions", want: rollup, rpc: breakdown(analyticsv1.Dimension_DIMENSION_CAMPAIGN, "", analyticsv1.Metric_METRIC_CONVERSIONS), ref: refCampaignBreakdown},
		{name: "funnel view→tap→purchase, 1-day window", want: raw, rpc: funnel, ref: refFunnel, target: 1500 * milli},
	}
}

// queries times every case: a warm-up run each way first (comparing the RPC's answer and
// source with the direct run's), then RPC and direct runs alternate, so both see the same
// server state, until -iterations each or -query-budget (at least minRuns each).
func (b *bench) queries(ctx context.Context, e *env, d dataset, conn driver.Conn) ([]queryStats, error) {
	rctx, err := e.as(ctx, d.Tenants[0].ID, rbac.Analyst)
	if err != nil {
		return nil, err
	}
	fmt.Printf("\nQueries (tenant %s; RPC over mTLS with an analyst JWT vs the same SQL through clickhouse-go vs the best SQL for the question (reference); up to %d runs each way, %s budget)\n",
		d.Tenants[0].ID, b.cfg.iterations, b.cfg.budget)
	var stats []queryStats
	direct := clickhouse.NewQueries(conn, conn, clickhouse.DefaultQueryLimits)
	for _, qc := range cases(e.client, d.Tenants[0]) {
		progress("%s (%s)", qc.name, machine())
		var err error
		if qc.direct, qc.reference, err = check(rctx, ctx, qc, e.sent, direct, conn); err != nil { // also the warm-up, each way
			return nil, err
		}
		var rpcLat, dirLat, refLat []time.Duration
		var rpcFail, dirFail, refFail int
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
			// The three ways in turn, each first in one of three runs.
			ways := []func() error{
				func() error { return timed(qc.rpc, rctx, &rpcLat, &rpcFail) },
				func() error { return timed(qc.direct, ctx, &dirLat, &dirFail) },
				func() error { return timed(qc.reference, ctx, &refLat, &refFail) },
			}
			for j := range ways {
				if err := ways[(i+j)%len(ways)](); err != nil {
					return nil, err
				}
			}
		}
		st := queryStats{name: qc.name, source: sourceName(qc.want), rpc50: percentile(rpcLat, 0.5), rpc99: percentile(rpcLat, 0.99),
			dir50: percentile(dirLat, 0.5), dir99: percentile(dirLat, 0.99), ref50: percentile(refLat, 0.5), ref99: percentile(refLat, 0.99),
			target: qc.target, runs: len(rpcLat) + rpcFail, rpcFail: rpcFail, dirFail: dirFail, refFail: refFail}
		stats = append(stats, st)
		label := fmt.Sprintf("%s [%s]", qc.name, st.source)
		runs, p99 := "", ""
		if st.runs < b.cfg.iterations {
			runs = fmt.Sprintf("(%d runs each way: budget reached)", st.runs)
			if st.runs < 100 {
				p99 = "(the slowest run)"
			}
		}
		if rpcFail+dirFail+refFail > 0 {
			b.add(label+": stopped at a query limit", float64(rpcFail+dirFail+refFail), "runs",
				fmt.Sprintf("(RPC %d, direct %d, reference %d of %d each; left out of the percentiles: %v)", rpcFail, dirFail, refFail, st.runs, firstFail))
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
		if len(refLat) > 0 {
			b.add(label+": reference p50", ms(st.ref50), "ms", "(the best SQL for the question, directly)")
			b.add(label+": reference p99", ms(st.ref99), "ms", p99)
			b.add(label+": RPC/reference p50", float64(st.rpc50)/float64(st.ref50), "x", "")
		}
		if qc.target > 0 {
			b.add(label+": RPC p50 against issue 12's target", ms(st.rpc50), "ms", fmt.Sprintf("(target ≤ %s: %s)", qc.target, verdict(st.rpc50 <= qc.target)))
		}
	}
	return stats, nil
}

// check runs a case's RPC once, records what it sent to ClickHouse, and returns the direct
// run replaying that; it runs it once and fails when the answers or the sources differ. A run
// stopped at a query limit (a busy machine) is retried; when no pair completes the case is
// timed unchecked.
func check(rctx, ctx context.Context, qc queryCase, sent *recorder, store analytics.Store, conn driver.Conn) (run, run, error) {
	var msg string
	var direct, ref run
	for range 3 {
		sent.reset()
		got, src, err := qc.rpc(rctx)
		if err != nil && !tooExpensive(err) {
			return nil, nil, fmt.Errorf("%s through the RPC: %w", qc.name, err)
		}
		rpcErr := err
		aggs, funnels := sent.take()
		if len(aggs)+len(funnels) == 0 {
			return nil, nil, fmt.Errorf("%s: the RPC sent no query", qc.name)
		}
		direct = replay(store, aggs, funnels)
		refSQL, refArgs, figure := qc.ref(aggs, funnels)
		ref = referenceRun(conn, refSQL, refArgs, figure)
		want, dsrc, err := direct(ctx)
		if err != nil && !tooExpensive(err) {
			return nil, nil, fmt.Errorf("%s directly: %w", qc.name, err)
		}
		refGot, _, refErr := ref(ctx)
		if refErr != nil && !tooExpensive(refErr) {
			return nil, nil, fmt.Errorf("%s, reference SQL: %w", qc.name, refErr)
		}
		if rpcErr != nil || err != nil {
			msg = fmt.Sprintf("stopped at a query limit (RPC: %v; direct: %v)", rpcErr, err)
			continue
		}
		switch {
		case dsrc != qc.want:
			return nil, nil, fmt.Errorf("%s: the service read the %s tables, the case expects %s", qc.name, sourceName(dsrc), sourceName(qc.want))
		case src != 0 && src != dsrc:
			return nil, nil, fmt.Errorf("%s: the RPC says it answered from %s, it queried %s", qc.name, sourceName(src), sourceName(dsrc))
		case got != want:
			return nil, nil, fmt.Errorf("%s: the RPC's answer (%d) differs from its replayed queries' (%d)", qc.name, got, want)
		case refErr == nil && refGot != got:
			return nil, nil, fmt.Errorf("%s: the reference SQL's answer (%d) differs from the RPC's (%d)", qc.name, refGot, got)
		case got == 0:
			return nil, nil, fmt.Errorf("%s: empty answer", qc.name)
		}
		progress("  source %s; %d queries a call; the three answer %d", sourceName(dsrc), len(aggs)+len(funnels), got)
		return direct, ref, nil
	}
	progress("  not compared: %s", msg)
	return direct, ref, nil
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
	fmt.Printf("  %-42s %-6s %9s %9s %10s %10s %6s  %-27s %9s %16s\n", "query", "source", "RPC p50", "RPC p99", "direct p50", "direct p99", "ratio",
		"RPC p50 ≤ 1.15×direct+10ms", "ref p50", "issue 12 target")
	for _, s := range stats {
		if s.rpc50 == 0 || s.dir50 == 0 {
			fmt.Printf("  %-42s %-6s every run stopped at a query limit on one side (RPC %d, direct %d of %d)\n", s.name, s.source, s.rpcFail, s.dirFail, s.runs)
			continue
		}
		limit := overheadLimit(s.dir50)
		ref, target := "—", ""
		if s.ref50 > 0 {
			ref = fmt.Sprintf("%.1f ms", ms(s.ref50))
		}
		if s.target > 0 {
			target = fmt.Sprintf("≤ %s %s", s.target, verdict(s.rpc50 <= s.target))
		}
		fmt.Printf("  %-42s %-6s %6.1f ms %6.1f ms %7.1f ms %7.1f ms %6.2f  %-27s %9s %16s\n", s.name, s.source, ms(s.rpc50), ms(s.rpc99),
			ms(s.dir50), ms(s.dir99), float64(s.rpc50)/float64(s.dir50), fmt.Sprintf("%s (≤ %.1f ms)", verdict(s.rpc50 <= limit), ms(limit)), ref, target)
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
