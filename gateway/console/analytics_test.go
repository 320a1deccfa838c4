package console

import (
	"bytes"
	"math"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
)

func TestUplift(t *testing.T) {
	for _, tc := range []struct {
		name    string
		v, base ratio
		want    ratio
	}{
		{"better", ratio{0.15, true}, ratio{0.10, true}, ratio{0.5, true}},
		{"worse", ratio{0.05, true}, ratio{0.10, true}, ratio{-0.5, true}},
		{"same", ratio{0.10, true}, ratio{0.10, true}, ratio{0, true}},
		{"baseline zero", ratio{0.10, true}, ratio{0, true}, ratio{}},
		{"baseline undefined", ratio{0.10, true}, ratio{}, ratio{}},
		{"variant undefined", ratio{}, ratio{0.10, true}, ratio{}},
		{"NaN", ratio{math.NaN(), true}, ratio{0.1, true}, ratio{}},
	} {
		got := uplift(tc.v, tc.base)
		if got.OK != tc.want.OK || math.Abs(got.V-tc.want.V) > 1e-12 {
			t.Errorf("%s: uplift = %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if got := (ratio{}).Signed(); got != "—" {
		t.Errorf("undefined uplift shows %q", got)
	}
	if got := (ratio{0.125, true}).Signed(); got != "+12.50 %" {
		t.Errorf("uplift shows %q", got)
	}
}

func metrics(imp, clicks, conv int64) *analyticsv1.Metrics {
	m := &analyticsv1.Metrics{Impressions: imp, Clicks: clicks, Conversions: conv, Events: imp + clicks + conv}
	if imp > 0 {
		m.Ctr = float64(clicks) / float64(imp)
	}
	if clicks > 0 {
		m.Cvr = float64(conv) / float64(clicks)
	}
	return m
}

func TestVariantRows(t *testing.T) {
	cur := []*analyticsv1.CampaignMetrics{
		{Variant: "a", Metrics: metrics(10, 2, 1)}, // CTR 0.2, CVR 0.5
		{Variant: "b", Metrics: metrics(10, 3, 0)}, // CTR 0.3, CVR 0
		{Variant: "zz", Metrics: metrics(0, 0, 0)},
	}
	rows := variantRows([]string{"b", "a", "c"}, cur, nil, false)
	var names []string
	for _, r := range rows {
		names = append(names, r.Name)
	}
	// The campaign's variants first, in its order (c without events: zeros), then the rest.
	if strings.Join(names, ",") != "b,a,c,zz" {
		t.Fatalf("order %v", names)
	}
	if !rows[0].Baseline || rows[1].Baseline || rows[0].CTRUplift.OK {
		t.Errorf("baseline %+v", rows[0])
	}
	// a against b: CTR 0.2 / 0.3 - 1; CVR against a baseline of 0: undefined.
	if u := rows[1].CTRUplift; !u.OK || math.Abs(u.V-(0.2/0.3-1)) > 1e-12 {
		t.Errorf("CTR uplift of a: %+v", u)
	}
	if rows[1].CVRUplift.OK {
		t.Errorf("CVR uplift against a zero baseline: %+v", rows[1].CVRUplift)
	}
	// No impressions: CTR undefined, not 0 %.
	if rows[2].CTR().OK || rows[2].CTR().Text() != "—" || rows[2].CTRUplift.OK || rows[2].Prev != nil {
		t.Errorf("variant without events: %+v", rows[2])
	}

	// Compare: every row gets the previous period's numbers (zeros where it had none).
	rows = variantRows([]string{"a"}, cur[:1], []*analyticsv1.CampaignMetrics{{Variant: "", Metrics: metrics(0, 0, 0)}}, true)
	if len(rows) != 1 || rows[0].Prev == nil || rows[0].Prev.GetImpressions() != 0 {
		t.Errorf("compare rows %+v", rows)
	}
	// A campaign without variants: the API's single row (no variant) is the baseline.
	rows = variantRows(nil, []*analyticsv1.CampaignMetrics{{Metrics: metrics(4, 1, 0)}}, nil, false)
	if len(rows) != 1 || rows[0].Label() != "(no variant)" || !rows[0].Baseline {
		t.Errorf("no variants: %+v", rows)
	}
}

func TestParseAnalyticsQuery(t *testing.T) {
	now := time.Date(2026, 3, 29, 10, 30, 0, 0, time.UTC) // Europe/Berlin switches to summer time this day
	berlin, _ := time.LoadLocation("Europe/Berlin")

	q, err := parseAnalyticsQuery(url.Values{}, now, "Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	// Default: the last 7 days up to today, in the campaign's zone, by day, no compare.
	if q.From != "2026-03-23" || q.To != "2026-03-29" || q.Zone != "Europe/Berlin" || q.Gran != "day" || q.Compare || q.Days != 7 {
		t.Errorf("defaults %+v", q)
	}
	if !q.Start.Equal(time.Date(2026, 3, 23, 0, 0, 0, 0, berlin)) || !q.End.Equal(time.Date(2026, 3, 30, 0, 0, 0, 0, berlin)) {
		t.Errorf("range %v – %v", q.Start, q.End)
	}
	// The previous period: as many days, just before (local midnights, across DST).
	if !q.PrevEnd.Equal(q.Start) || !q.PrevStart.Equal(time.Date(2026, 3, 16, 0, 0, 0, 0, berlin)) {
		t.Errorf("previous %v – %v", q.PrevStart, q.PrevEnd)
	}
	// No campaign zone (or a bad one): UTC.
	if q, err := parseAnalyticsQuery(url.Values{}, now, ""); err != nil || q.Zone != "UTC" {
		t.Errorf("default zone %q %v", q.Zone, err)
	}

	q, err = parseAnalyticsQuery(url.Values{"from": {"2026-03-01"}, "to": {"2026-03-02"}, "compare": {"1"}, "gran": {"hour"}, "zone": {"America/New_York"},
		"step": {"view", " ", "purchase"}, "window": {"48"}, "dim": {"property"}, "key": {"country"}, "metric": {"clicks"}}, now, "")
	if err != nil {
		t.Fatal(err)
	}
	if !q.Compare || q.Gran != "hour" || q.granularity() != analyticsv1.Granularity_GRANULARITY_HOUR || q.Days != 2 ||
		strings.Join(q.Steps, ",") != "view,purchase" || q.WindowHours != 48 || q.metric() != analyticsv1.Metric_METRIC_CLICKS {
		t.Errorf("parsed %+v", q)
	}
	// Its links carry the whole query, and parse back to the same.
	again, err := parseAnalyticsQuery(q.values(), now, "")
	if err != nil || again.Query() != q.Query() {
		t.Errorf("round trip %q → %q (%v)", q.Query(), again.Query(), err)
	}
	// A section's form leaves its own fields out of the hidden ones.
	for _, h := range q.Hidden("funnel") {
		if h.Name == "step" || h.Name == "window" {
			t.Errorf("funnel form hides %v", h)
		}
	}
	if n := len(q.StepSlots()); n != 4 {
		t.Errorf("%d step slots", n)
	}

	for name, v := range map[string]url.Values{
		"zone":              {"zone": {"Mars/Olympus"}},
		"local zone":        {"zone": {"Local"}},
		"zone path":         {"zone": {"../../etc/passwd"}},
		"machine zone":      {"zone": {"localtime"}},
		"posix zone":        {"zone": {"posix/Europe/Berlin"}},
		"date":              {"from": {"yesterday"}},
		"date range":        {"from": {"2026-03-10"}, "to": {"2026-03-01"}},
		"too long":          {"from": {"2024-01-01"}, "to": {"2026-01-01"}},
		"hours too long":    {"from": {"2026-01-01"}, "to": {"2026-03-01"}, "gran": {"hour"}},
		"granularity":       {"gran": {"minute"}},
		"compare":           {"compare": {"maybe"}},
		"compare too early": {"from": {"1970-01-02"}, "to": {"1970-01-03"}, "compare": {"1"}},
		"before 1970":       {"from": {"1969-12-01"}},
		"one step":          {"step": {"view"}},
		"too many steps":    {"step": strings.Split("a,b,c,d,e,f,g,h,i,j,k", ",")},
		"long step":         {"step": {strings.Repeat("x", 201), "y"}},
		"funnel range":      {"from": {"2025-01-01"}, "to": {"2025-06-01"}, "step": {"a", "b"}},
		"window":            {"window": {"0"}},
		"dimension":         {"dim": {"device"}},
		"property key":      {"dim": {"property"}},
		"long key":          {"key": {strings.Repeat("k", 129)}},
		"metric":            {"metric": {"revenue"}},
	} {
		if _, err := parseAnalyticsQuery(v, now, ""); err == nil {
			t.Errorf("%s: %v accepted", name, v)
		} else if _, ok := err.(badQuery); !ok || err.Error() == "" {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// The page escapes what event senders chose (variant names, property values, event names),
// and its markup has no style attribute or inline script for the CSP to block.
func TestAnalyticsPageRenders(t *testing.T) {
	pages, err := parsePages()
	if err != nil {
		t.Fatal(err)
	}
	evil := `<img src=x onerror=alert(1)>`
	q, err := parseAnalyticsQuery(url.Values{"step": {evil, "b"}, "dim": {"property"}, "key": {evil}, "compare": {"1"}}, time.Now(), "")
	if err != nil {
		t.Fatal(err)
	}
	camp := &campaignsv1.Campaign{Id: "c1", Name: evil, Variants: []*campaignsv1.Variant{{Name: "a"}}}
	rows := variantRows([]string{"a"}, []*analyticsv1.CampaignMetrics{{Variant: "a", Metrics: metrics(3, 1, 1)},
		{Variant: evil, Metrics: metrics(2, 1, 0)}}, nil, true)
	v := analyticsView{Campaign: camp, Q: q, Base: "/console/campaigns/c1/analytics", Zones: commonZones, Metrics: breakdownMetrics,
		Total: metrics(5, 2, 1), PrevTotal: metrics(0, 0, 0), Variants: rows, Live: true, LiveSrc: "/console/campaigns/c1/analytics/live" + q.Query(),
		Breakdown: []breakdownRow{{Value: evil, M: metrics(1, 0, 0)}}, EventNames: []string{evil},
		Funnel: []funnelRow{{N: 1, Step: evil, Users: 2, FromStart: ratio{1, true}}, {N: 2, Step: "b", FromStart: ratio{0, true}}}}
	v.VariantChart = variantChart(rows).layout()
	v.BreakdownChart = breakdownChart(q, v.Breakdown).layout()
	v.FunnelChart = funnelChart(v.Funnel).layout()
	v.SeriesChart = seriesChart(q, nil).layout()
	var buf bytes.Buffer
	if err := pages["analytics"].ExecuteTemplate(&buf, "layout", view{Title: "t", Data: v}); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	if strings.Contains(page, "<img") || !strings.Contains(page, "&lt;img src=x onerror=alert(1)&gt;") {
		t.Errorf("user-supplied text not escaped")
	}
	// Markup only: quoted attribute values (escaped text) taken out.
	markup := regexp.MustCompile(`"[^"]*"`).ReplaceAllString(page, `""`)
	if m := regexp.MustCompile(`(?i)<script>|<[^>]*\s(style|on[a-z]+)=`).FindString(markup); m != "" {
		t.Errorf("inline style or script in the page: %q", m)
	}
	for _, want := range []string{`data-live="impressions"`, `data-live="clicks"`, `data-live="conversions"`, `<svg class="chart" role="img" aria-label="`,
		">Download CSV</a>", "/analytics/variants.csv?", "/analytics/series.csv?", "/analytics/breakdown.csv?", "/analytics/funnel.csv?", "<title>"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
}

func TestFunnelAndSeriesRows(t *testing.T) {
	// Nobody started: no conversion rate (the API answers 0), shown as "—".
	rows := funnelRows(&analyticsv1.GetFunnelResponse{Steps: []*analyticsv1.FunnelStepResult{
		{Step: &analyticsv1.FunnelStep{EventName: "view"}, Users: 0, ConversionFromStart: 0, ConversionFromPrevious: 1},
		{Step: &analyticsv1.FunnelStep{EventName: "buy"}, Users: 0}}})
	if len(rows) != 2 || rows[1].FromStart.OK || rows[1].FromPrev.OK || rows[1].FromStart.Text() != "—" {
		t.Errorf("empty funnel %+v", rows)
	}
	rows = funnelRows(&analyticsv1.GetFunnelResponse{Steps: []*analyticsv1.FunnelStepResult{
		{Step: &analyticsv1.FunnelStep{EventName: "view"}, Users: 4, ConversionFromStart: 1, ConversionFromPrevious: 1},
		{Step: &analyticsv1.FunnelStep{EventName: "buy"}, Users: 1, ConversionFromStart: 0.25, ConversionFromPrevious: 0.25}}})
	if rows[1].FromStart.Text() != "25.00 %" || rows[1].N != 2 || rows[1].Step != "buy" {
		t.Errorf("funnel %+v", rows)
	}

	// The compared period's buckets sit beside the current ones by place; a shorter period
	// (a DST day has 23 hours) leaves the last rows without one.
	q, err := parseAnalyticsQuery(url.Values{"zone": {"Europe/Berlin"}, "gran": {"hour"}}, time.Now(), "")
	if err != nil {
		t.Fatal(err)
	}
	b := func(h int) *analyticsv1.Bucket {
		return &analyticsv1.Bucket{StartTime: timestamppb.New(time.Date(2026, 3, 29, h, 0, 0, 0, time.UTC)), Metrics: metrics(int64(h), 0, 0)}
	}
	sr := seriesRows(q, &analyticsv1.GetMetricSeriesResponse{Buckets: []*analyticsv1.Bucket{b(0), b(1), b(2)}},
		&analyticsv1.GetMetricSeriesResponse{Buckets: []*analyticsv1.Bucket{b(5), b(6)}})
	if len(sr) != 3 || sr[1].Prev.GetImpressions() != 6 || sr[2].Prev != nil || sr[0].Start != "2026-03-29 01:00 CET" || sr[2].Start != "2026-03-29 04:00 CEST" {
		t.Errorf("series rows %+v", sr)
	}
	c := seriesChart(q, sr)
	if len(c.Series) != 3 || len(c.X) != 3 { // no compare asked: no dashed series
		t.Errorf("chart %+v", c)
	}
}
