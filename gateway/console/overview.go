package console

import (
	"math"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
)

// The overview compares rolling periods ending now with the same length just before, so
// that the figures are comparable at any time of day and in any time zone: events and
// conversions over the last 24 hours against the 24 hours before, ingest's flow over the last
// hour against the hour before.
const (
	overviewPeriod = 24 * time.Hour
	overviewFlow   = time.Hour
	// overviewActivePages bounds how many active campaigns are counted (pages of 1,000).
	overviewActivePages = 5
	overviewActivePage  = 1000
	// overviewActiveShown is how many active campaigns are listed with their metrics.
	overviewActiveShown = 10
)

// kpi is a figure against the previous period.
type kpi struct {
	Value, Prev int64
	// Err says in words why the figure is missing.
	Err string
}

// Change is the relative change against the previous period: "+12.5 %", "−3 %", "new" when
// the previous period had none, "no change".
func (k kpi) Change() string { return relChange(k.Value, k.Prev) }

// Direction is "up", "down" or "" for the change's colour.
func (k kpi) Direction() string {
	switch {
	case k.Value > k.Prev:
		return "up"
	case k.Value < k.Prev:
		return "down"
	}
	return ""
}

func relChange(v, prev int64) string {
	switch {
	case v == prev:
		return "no change"
	case prev == 0:
		return "new"
	}
	pct := float64(v-prev) / float64(prev) * 100
	s := strconv.FormatFloat(math.Abs(pct), 'f', 1, 64) + " %"
	if pct < 0 {
		return "−" + s
	}
	return "+" + s
}

type overviewData struct {
	Analytics, Campaigns bool
	Events, Conversions  kpi
	// Active counts the active campaigns; Started those of them that became active in the
	// last 24 hours; ActiveMore says the count stopped at the bound.
	Active              kpi
	Started             int64
	ActiveMore          bool
	ActiveList          []campaignRow
	ActiveMetricsErr    string
	HealthShown, Health bool
	Flow                kpi
}

func (c *Console) overviewPage(rq *request) {
	now := rq.now()
	d := overviewData{Analytics: rq.can("analytics.read") && c.api.Analytics != nil,
		Campaigns: rq.can("campaigns.read") && c.api.Campaigns != nil}
	var wg sync.WaitGroup
	// One breakdown by event type per period: its rows' sums are the tenant's events and
	// conversions (no campaign id needed). Four periods: the last 24 hours and the 24 before,
	// the last hour and the one before. They run one after the other: analytics admits only a
	// few queries per tenant at once and refuses the rest, and other pages of the tenant's
	// users query too.
	type totals struct {
		events, conversions int64
		err                 error
	}
	var periods [4]totals
	if d.Analytics {
		for i, p := range []struct{ length, back time.Duration }{
			{overviewPeriod, 0}, {overviewPeriod, overviewPeriod}, {overviewFlow, 0}, {overviewFlow, overviewFlow},
		} {
			end := now.Add(-p.back)
			t := &periods[i]
			t.events, t.conversions, t.err = c.eventTotals(rq, end.Add(-p.length), end)
		}
	}
	if c.cfg.Health != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.HealthShown, d.Health = true, c.cfg.Health(rq.ctx, "ingest")
		}()
	}
	if d.Campaigns {
		c.activeCampaigns(rq, now, &d)
	}
	wg.Wait()
	if d.Analytics {
		d.Events = kpi{Value: periods[0].events, Prev: periods[1].events}
		d.Conversions = kpi{Value: periods[0].conversions, Prev: periods[1].conversions}
		d.Flow = kpi{Value: periods[2].events, Prev: periods[3].events}
		for i, t := range periods {
			if t.err == nil {
				continue
			}
			_, msg := explain(t.err)
			if i < 2 {
				d.Events.Err, d.Conversions.Err = msg, msg
			} else {
				d.Flow.Err = msg
			}
		}
	}
	rq.render("overview", "Overview", d)
}

// eventTotals is the tenant's events and conversions in [start, end).
func (c *Console) eventTotals(rq *request, start, end time.Time) (events, conversions int64, err error) {
	resp, err := c.api.Analytics.GetBreakdown(rq.ctx, &analyticsv1.GetBreakdownRequest{
		Dimension: analyticsv1.Dimension_DIMENSION_EVENT_TYPE, Limit: 100,
		StartTime: timestamppb.New(start), EndTime: timestamppb.New(end)})
	if err != nil {
		return 0, 0, err
	}
	for _, r := range resp.GetRows() {
		events += r.GetMetrics().GetEvents()
		conversions += r.GetMetrics().GetConversions()
	}
	return events, conversions, nil
}

// activeCampaigns counts the active campaigns (those that became active in the last 24
// hours apart) and lists the first few with their metrics of the last 24 hours.
func (c *Console) activeCampaigns(rq *request, now time.Time, d *overviewData) {
	since := now.Add(-overviewPeriod)
	req := &campaignsv1.ListCampaignsRequest{States: []campaignsv1.Campaign_State{campaignsv1.Campaign_STATE_ACTIVE},
		PageSize: overviewActivePage, OrderBy: "name"}
	for page := 0; page < overviewActivePages; page++ {
		resp, err := c.api.Campaigns.ListCampaigns(rq.ctx, req)
		if err != nil {
			_, d.Active.Err = explain(err)
			return
		}
		for _, x := range resp.GetCampaigns() {
			d.Active.Value++
			if x.GetStateTime().AsTime().After(since) {
				d.Started++
			}
			if len(d.ActiveList) < overviewActiveShown {
				d.ActiveList = append(d.ActiveList, campaignRow{C: x})
			}
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		if page == overviewActivePages-1 {
			d.ActiveMore = true
		}
		req.PageToken = resp.GetNextPageToken()
	}
	d.Active.Prev = d.Active.Value - d.Started
	if !d.Analytics || len(d.ActiveList) == 0 {
		return
	}
	ids := make([]string, len(d.ActiveList))
	for i, r := range d.ActiveList {
		ids[i] = r.C.GetId()
	}
	resp, err := c.api.Analytics.GetCampaignSummary(rq.ctx, &analyticsv1.GetCampaignSummaryRequest{
		CampaignIds: ids, StartTime: timestamppb.New(since), EndTime: timestamppb.New(now)})
	if err != nil {
		_, d.ActiveMetricsErr = explain(err)
		return
	}
	byID := map[string]*analyticsv1.Metrics{}
	for _, row := range resp.GetCampaigns() {
		byID[row.GetCampaignId()] = row.GetMetrics()
	}
	for i := range d.ActiveList {
		d.ActiveList[i].M = byID[d.ActiveList[i].C.GetId()]
	}
}
