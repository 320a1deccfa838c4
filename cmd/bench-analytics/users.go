package main

import (
	"context"
	"fmt"
	"math"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

// usersError compares the approximate unique users (uniqCombined, the default) with the exact
// ones over the big tenant's whole range, in the groupings the API answers: the tenant, each
// day, hour and event type, each campaign, campaign variant and day of a campaign (from the
// rollups), each country (raw). It prints the largest and the mean relative error — the figures
// docs/api.md states.
func (b *bench) usersError(ctx context.Context, conn driver.Conn, d dataset) error {
	fmt.Printf("\nUnique users: approximate (uniqCombined) against exact (uniqExact), tenant %s over %d days\n", d.Tenants[0].ID, d.Days)
	store := clickhouse.NewQueries(conn, conn, clickhouse.DefaultQueryLimits)
	base := analytics.Query{TenantID: d.Tenants[0].ID, Start: d.Begin(), End: d.End, Rollup: true, Location: d.End.Location()}
	one := func(change func(q *analytics.Query)) []analytics.Query {
		q := base
		change(&q)
		return []analytics.Query{q}
	}
	var campaignDays []analytics.Query // a day series of each campaign
	for _, c := range d.Tenants[0].Campaigns {
		q := base
		q.Dimension, q.Granularity, q.CampaignIDs = analytics.Bucket, analytics.Day, []string{c.ID}
		campaignDays = append(campaignDays, q)
	}
	groupings := []struct {
		name    string
		queries []analytics.Query
	}{
		{"the tenant", one(func(q *analytics.Query) { q.Dimension = analytics.NoDimension })},
		{"each day", one(func(q *analytics.Query) { q.Dimension, q.Granularity = analytics.Bucket, analytics.Day })},
		{"each hour", one(func(q *analytics.Query) { q.Dimension, q.Granularity = analytics.Bucket, analytics.Hour })},
		{"each event type", one(func(q *analytics.Query) { q.Dimension = analytics.EventType })},
		{"each campaign", one(func(q *analytics.Query) { q.Dimension = analytics.Campaign })},
		{"each campaign variant", one(func(q *analytics.Query) { q.Dimension = analytics.CampaignVariant })},
		{"each day of each campaign", campaignDays},
		{"each country (raw)", one(func(q *analytics.Query) { q.Dimension, q.PropertyKey, q.Rollup = analytics.Property, "country", false })},
	}
	var all []float64
	for _, g := range groupings {
		var errs []float64
		var lo, hi int64 = math.MaxInt64, 0
		for _, q := range g.queries {
			approx, err := store.Aggregate(ctx, q)
			if err != nil {
				return fmt.Errorf("unique users of %s: %w", g.name, err)
			}
			q.ExactUsers = true
			exact, err := store.Aggregate(ctx, q)
			if err != nil {
				return fmt.Errorf("exact unique users of %s: %w", g.name, err)
			}
			want := map[[2]string]int64{}
			for _, r := range exact {
				want[[2]string{r.K1, r.K2}] = r.UniqueUsers
			}
			for _, r := range approx {
				w := want[[2]string{r.K1, r.K2}]
				if w == 0 {
					continue
				}
				errs = append(errs, float64(r.UniqueUsers-w)/float64(w))
				lo, hi = min(lo, w), max(hi, w)
			}
		}
		if len(errs) == 0 {
			continue
		}
		all = append(all, errs...)
		worst, mean := errStats(errs)
		b.add("unique users, "+g.name+": largest error", worst*100, "%", fmt.Sprintf("(mean |error| %.3f%% over %d answers of %d to %d users)", mean*100, len(errs), lo, hi))
	}
	worst, mean := errStats(all)
	b.add("unique users, every answer above: largest error", worst*100, "%", fmt.Sprintf("(mean |error| %.3f%% over %d answers)", mean*100, len(all)))
	return nil
}

// errStats is the largest and the mean absolute relative error.
func errStats(errs []float64) (worst, mean float64) {
	for _, e := range errs {
		worst = max(worst, math.Abs(e))
		mean += math.Abs(e)
	}
	if len(errs) > 0 {
		mean /= float64(len(errs))
	}
	return worst, mean
}
