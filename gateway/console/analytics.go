package console

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // the time zone chooser must not depend on the zone database of the gateway's machine

	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
)

// The campaign analytics screen: one date range (optionally compared with the period of the
// same length before it) in a time zone, and what the analytics API answers over it — the
// time series, the variants with their CTR/CVR and uplift against the first variant, a
// breakdown, a funnel, the live counters (WatchCampaignMetrics through a text/event-stream)
// and the pacing against the budget. Every table can be downloaded as CSV with the same query
// parameters, so a download holds exactly the numbers on the page.

func (c *Console) analyticsRoutes(m *http.ServeMux) {
	base := Prefix + "campaigns/{id}/analytics"
	m.HandleFunc("GET "+base, c.signedIn(c.analyticsPage))
	m.HandleFunc("GET "+base+"/live", c.signedIn(c.analyticsLive))
	m.HandleFunc("GET "+base+"/variants.csv", c.signedIn(c.variantsCSV))
	m.HandleFunc("GET "+base+"/series.csv", c.signedIn(c.seriesCSV))
	m.HandleFunc("GET "+base+"/breakdown.csv", c.signedIn(c.breakdownCSV))
	m.HandleFunc("GET "+base+"/funnel.csv", c.signedIn(c.funnelCSV))
}

// Bounds of the page's query, as the analytics API documents them (analytics.proto):
// summaries and breakdowns over at most 400 days, hourly series over at most 31, funnels over
// at most 90; funnels of 2 to 10 steps with a window of up to 90 days. The console checks them
// to answer in words before calling; the API checks them again.
var (
	maxRange       = 400 * 24 * time.Hour
	maxHourRange   = 31 * 24 * time.Hour
	maxFunnelRange = 90 * 24 * time.Hour
	firstDate      = time.Date(1970, 1, 2, 0, 0, 0, 0, time.UTC)
	lastDate       = time.Date(2099, 12, 30, 0, 0, 0, 0, time.UTC)
)

const (
	maxFunnelSteps   = 10
	maxStepLen       = 200
	maxPropertyKey   = 128
	maxWindowHours   = 90 * 24
	breakdownLimit   = 25
	liveInterval     = 2 // seconds between live pushes
	defaultRangeDays = 7
	eventNameHints   = 50
)

// breakdownDimensions are the dimensions the page offers, by query value.
var breakdownDimensions = map[string]analyticsv1.Dimension{
	"variant":  analyticsv1.Dimension_DIMENSION_VARIANT,
	"campaign": analyticsv1.Dimension_DIMENSION_CAMPAIGN,
	"property": analyticsv1.Dimension_DIMENSION_PROPERTY,
}

// breakdownMetrics are the metrics a breakdown can be ordered by, in the chooser's order.
var breakdownMetrics = []struct {
	Value, Label string
	Metric       analyticsv1.Metric
}{
	{"events", "Events", analyticsv1.Metric_METRIC_EVENTS},
	{"impressions", "Impressions", analyticsv1.Metric_METRIC_IMPRESSIONS},
	{"clicks", "Clicks", analyticsv1.Metric_METRIC_CLICKS},
	{"conversions", "Conversions", analyticsv1.Metric_METRIC_CONVERSIONS},
	{"conversion_value", "Conversion value", analyticsv1.Metric_METRIC_CONVERSION_VALUE},
	{"unique_users", "Unique users", analyticsv1.Metric_METRIC_UNIQUE_USERS},
	{"spend", "Spend", analyticsv1.Metric_METRIC_SPEND},
}

// commonZones are offered in the time zone chooser (any IANA name may be typed).
var commonZones = []string{"UTC", "Europe/London", "Europe/Berlin", "Europe/Paris", "America/New_York", "America/Chicago",
	"America/Los_Angeles", "America/Sao_Paulo", "Asia/Kolkata", "Asia/Singapore", "Asia/Tokyo", "Australia/Sydney"}

// analyticsQuery is the page's query: the range, the comparison, the buckets, the zone, and
// the funnel's and breakdown's choices. Every analytics URL of a campaign takes it.
type analyticsQuery struct {
	From, To string // dates (YYYY-MM-DD) in Zone, both included
	Compare  bool
	Gran     string // "hour" or "day"
	Zone     string
	// Steps are the funnel's event names; StepsAny counts any campaign's events (else only
	// this campaign's); WindowHours is the funnel's conversion window.
	Steps       []string
	StepsAny    bool
	WindowHours int
	// Dim, Key and Metric choose the breakdown.
	Dim, Key, Metric string

	loc                *time.Location
	Start, End         time.Time // [Start, End): From's midnight to the midnight after To, in Zone
	PrevStart, PrevEnd time.Time // the period of as many days just before
	Days               int
}

// badQuery is a query parameter's problem, in words for the 400 page.
type badQuery struct{ msg string }

func (e badQuery) Error() string { return e.msg }

func bad(format string, args ...any) error { return badQuery{fmt.Sprintf(format, args...)} }

// parseAnalyticsQuery reads and checks the query. now and defaultZone (the campaign's
// schedule time zone, or "" for UTC) give the defaults: the last 7 days up to today.
func parseAnalyticsQuery(v url.Values, now time.Time, defaultZone string) (analyticsQuery, error) {
	q := analyticsQuery{Zone: v.Get("zone"), Gran: v.Get("gran"), Dim: v.Get("dim"), Key: strings.TrimSpace(v.Get("key")), Metric: v.Get("metric")}
	if q.Zone == "" {
		q.Zone = defaultZone
		if _, err := loadZone(q.Zone); err != nil {
			q.Zone = "UTC"
		}
	}
	loc, err := loadZone(q.Zone)
	if err != nil {
		return q, bad("The time zone %q is not an IANA time zone name such as Europe/Berlin or UTC.", truncate(q.Zone, 64))
	}
	q.loc = loc
	today := now.In(loc)
	todayDate := time.Date(today.Year(), today.Month(), today.Day(), 0, 0, 0, 0, time.UTC)
	to, from := todayDate, todayDate.AddDate(0, 0, -(defaultRangeDays-1))
	if s := v.Get("to"); s != "" {
		if to, err = parseDate(s); err != nil {
			return q, bad("The end date %q is not a date (YYYY-MM-DD).", truncate(s, 32))
		}
		if v.Get("from") == "" {
			from = to.AddDate(0, 0, -(defaultRangeDays - 1))
		}
	}
	if s := v.Get("from"); s != "" {
		if from, err = parseDate(s); err != nil {
			return q, bad("The start date %q is not a date (YYYY-MM-DD).", truncate(s, 32))
		}
	}
	if from.After(to) {
		return q, bad("The start date must not be after the end date.")
	}
	q.From, q.To = from.Format(time.DateOnly), to.Format(time.DateOnly)
	q.Days = int(to.Sub(from).Hours()/24) + 1
	q.Start = time.Date(from.Year(), from.Month(), from.Day(), 0, 0, 0, 0, loc)
	q.End = time.Date(to.Year(), to.Month(), to.Day()+1, 0, 0, 0, 0, loc)
	q.PrevEnd = q.Start
	q.PrevStart = time.Date(from.Year(), from.Month(), from.Day()-q.Days, 0, 0, 0, 0, loc)
	if q.End.Sub(q.Start) > maxRange {
		return q, bad("The range is longer than %d days.", int(maxRange.Hours()/24))
	}

	switch c := v.Get("compare"); c {
	case "", "0":
	case "1", "on":
		q.Compare = true
	default:
		return q, bad("Compare must be on or off.")
	}
	if q.Compare && q.PrevStart.Before(firstDate) {
		return q, bad("The period before %s starts before 1970: choose a later range to compare.", q.From)
	}
	switch q.Gran {
	case "":
		q.Gran = "day"
	case "day":
	case "hour":
		if q.End.Sub(q.Start) > maxHourRange {
			return q, bad("Hourly buckets need a range of at most %d days; choose days for a longer range.", int(maxHourRange.Hours()/24))
		}
	default:
		return q, bad("The granularity must be hour or day.")
	}

	steps := v["step"]
	if len(steps) > maxFunnelSteps {
		return q, bad("A funnel has at most %d steps.", maxFunnelSteps)
	}
	for _, s := range steps {
		if s = strings.TrimSpace(s); s != "" {
			if len(s) > maxStepLen {
				return q, bad("A funnel step's event name has at most %d characters.", maxStepLen)
			}
			q.Steps = append(q.Steps, s)
		}
	}
	if len(q.Steps) == 1 {
		return q, bad("A funnel needs at least 2 steps.")
	}
	if len(q.Steps) > 0 && q.End.Sub(q.Start) > maxFunnelRange {
		return q, bad("A funnel's range is at most %d days.", int(maxFunnelRange.Hours()/24))
	}
	switch s := v.Get("steps_from"); s {
	case "", "campaign":
	case "any":
		q.StepsAny = true
	default:
		return q, bad("Funnel steps count this campaign's events or any events.")
	}
	q.WindowHours = 24
	if s := v.Get("window"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxWindowHours {
			return q, bad("The funnel's window is 1 to %d hours.", maxWindowHours)
		}
		q.WindowHours = n
	}

	if q.Dim == "" {
		q.Dim = "variant"
	}
	if _, ok := breakdownDimensions[q.Dim]; !ok {
		return q, bad("A breakdown is by campaign, variant or property.")
	}
	if len(q.Key) > maxPropertyKey {
		return q, bad("The property key has at most %d characters.", maxPropertyKey)
	}
	if q.Dim == "property" && q.Key == "" {
		return q, bad("A breakdown by property needs the property's key (for example country).")
	}
	if q.Metric == "" {
		q.Metric = "events"
	}
	if q.metric() == analyticsv1.Metric_METRIC_UNSPECIFIED {
		return q, bad("The breakdown's metric %q is not one of events, impressions, clicks, conversions, conversion_value, unique_users or spend.", truncate(q.Metric, 32))
	}
	return q, nil
}

// ianaZone is the shape of an IANA zone name, as the analytics API accepts it: Area/Location
// (or a bare name such as UTC).
var ianaZone = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$`)

// loadZone loads an IANA time zone by the analytics API's rule: the shape of a zone name
// (no paths) and none of the names that mean the machine's zone rather than a place.
func loadZone(name string) (*time.Location, error) {
	if len(name) > 64 || !ianaZone.MatchString(name) || name == "Local" || name == "localtime" || name == "posixrules" ||
		strings.HasPrefix(name, "right/") || strings.HasPrefix(name, "posix/") {
		return nil, fmt.Errorf("time zone %q: not an IANA zone name", name)
	}
	return time.LoadLocation(name)
}

func parseDate(s string) (time.Time, error) {
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return d, err
	}
	if d.Before(firstDate) || d.After(lastDate) {
		return d, errors.New("date out of range")
	}
	return d, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (q analyticsQuery) metric() analyticsv1.Metric {
	for _, m := range breakdownMetrics {
		if m.Value == q.Metric {
			return m.Metric
		}
	}
	return analyticsv1.Metric_METRIC_UNSPECIFIED
}

func (q analyticsQuery) granularity() analyticsv1.Granularity {
	if q.Gran == "hour" {
		return analyticsv1.Granularity_GRANULARITY_HOUR
	}
	return analyticsv1.Granularity_GRANULARITY_DAY
}

// values is the query as URL parameters (defaults included, so a link keeps the zone).
func (q analyticsQuery) values() url.Values {
	v := url.Values{"from": {q.From}, "to": {q.To}, "gran": {q.Gran}, "zone": {q.Zone}, "dim": {q.Dim}, "metric": {q.Metric}}
	if q.Compare {
		v.Set("compare", "1")
	}
	if q.Key != "" {
		v.Set("key", q.Key)
	}
	if len(q.Steps) > 0 {
		v["step"] = q.Steps
		v.Set("window", strconv.Itoa(q.WindowHours))
		if q.StepsAny {
			v.Set("steps_from", "any")
		}
	}
	return v
}

// Query is the query string of the page's URLs ("?from=…"), for links and downloads.
func (q analyticsQuery) Query() string { return "?" + q.values().Encode() }

// hiddenField is a form's hidden input.
type hiddenField struct{ Name, Value string }

// Hidden are the query's parameters that a section's form does not itself ask for, so
// submitting one form keeps the others' choices. part is "range", "funnel" or "breakdown".
func (q analyticsQuery) Hidden(part string) []hiddenField {
	own := map[string][]string{
		"range":     {"from", "to", "compare", "gran", "zone"},
		"funnel":    {"step", "steps_from", "window"},
		"breakdown": {"dim", "key", "metric"},
	}[part]
	v := q.values()
	keys := make([]string, 0, len(v))
	for k := range v {
		if !slices.Contains(own, k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var out []hiddenField
	for _, k := range keys {
		for _, val := range v[k] {
			out = append(out, hiddenField{k, val})
		}
	}
	return out
}

// StepSlots are the funnel form's step inputs: the chosen steps and empty ones after them,
// at least 3 and at most maxFunnelSteps.
func (q analyticsQuery) StepSlots() []string {
	n := min(max(len(q.Steps)+2, 3), maxFunnelSteps)
	slots := make([]string, n)
	copy(slots, q.Steps)
	return slots
}

// ratio is a quotient that may be undefined (a division by zero).
type ratio struct {
	V  float64
	OK bool
}

// Text is the ratio as a percentage, "—" where undefined.
func (r ratio) Text() string {
	if !r.OK {
		return "—"
	}
	return fmtPercent(r.V)
}

// Signed is the ratio as a signed percentage (an uplift), "—" where undefined.
func (r ratio) Signed() string {
	if !r.OK {
		return "—"
	}
	s := fmtPercent(r.V)
	if r.V > 0 {
		s = "+" + s
	}
	return s
}

// ctrOf and cvrOf are the API's CTR and CVR, undefined without impressions (clicks): the API
// answers 0 there, which would read as "none clicked".
func ctrOf(m *analyticsv1.Metrics) ratio { return ratio{m.GetCtr(), m.GetImpressions() > 0} }
func cvrOf(m *analyticsv1.Metrics) ratio { return ratio{m.GetCvr(), m.GetClicks() > 0} }

// uplift is how much better v is than base, relative to base (0.25: 25 % higher); undefined
// when either is, or when base is 0.
func uplift(v, base ratio) ratio {
	if !v.OK || !base.OK || base.V == 0 || math.IsNaN(v.V) || math.IsNaN(base.V) {
		return ratio{}
	}
	return ratio{v.V/base.V - 1, true}
}

// variantRow is a row of the variants table.
type variantRow struct {
	Name     string
	Baseline bool
	M        *analyticsv1.Metrics
	// CTRUplift and CVRUplift are against the baseline (the campaign's first variant).
	CTRUplift, CVRUplift ratio
	// Prev is the variant's metrics in the compared period (nil without compare).
	Prev *analyticsv1.Metrics
}

// Label is the variant as shown ("(none)" for events without one).
func (r variantRow) Label() string {
	if r.Name == "" {
		return "(no variant)"
	}
	return r.Name
}

func (r variantRow) CTR() ratio     { return ctrOf(r.M) }
func (r variantRow) CVR() ratio     { return cvrOf(r.M) }
func (r variantRow) PrevCTR() ratio { return ctrOf(r.Prev) }
func (r variantRow) PrevCVR() ratio { return cvrOf(r.Prev) }

// variantRows orders the summary's rows by the campaign's variants (those without events get
// a row of zeros), then the other variants events named, and computes the uplifts against the
// first variant (the campaign's first, else the first row). prev are the compared period's
// rows (compare false: no comparison).
func variantRows(variants []string, cur, prev []*analyticsv1.CampaignMetrics, compare bool) []variantRow {
	byName := map[string]*analyticsv1.Metrics{}
	var names []string
	for _, r := range cur {
		if _, seen := byName[r.GetVariant()]; !seen {
			names = append(names, r.GetVariant())
		}
		byName[r.GetVariant()] = r.GetMetrics()
	}
	order := slices.Clone(variants)
	for _, n := range names {
		if slices.Contains(order, n) {
			continue
		}
		// The API's row for a campaign without any events has no variant; it says nothing
		// the campaign's own variants' rows of zeros do not.
		if n == "" && len(variants) > 0 && byName[n].GetEvents() == 0 {
			continue
		}
		order = append(order, n)
	}
	prevBy := map[string]*analyticsv1.Metrics{}
	for _, r := range prev {
		prevBy[r.GetVariant()] = r.GetMetrics()
	}
	rows := make([]variantRow, 0, len(order))
	for _, n := range order {
		m := byName[n]
		if m == nil {
			m = &analyticsv1.Metrics{}
		}
		row := variantRow{Name: n, M: m}
		if compare {
			row.Prev = prevBy[n]
			if row.Prev == nil {
				row.Prev = &analyticsv1.Metrics{}
			}
		}
		rows = append(rows, row)
	}
	if len(rows) > 0 {
		base := rows[0]
		rows[0].Baseline = true
		for i := range rows {
			rows[i].CTRUplift = uplift(rows[i].CTR(), base.CTR())
			rows[i].CVRUplift = uplift(rows[i].CVR(), base.CVR())
		}
		rows[0].CTRUplift, rows[0].CVRUplift = ratio{}, ratio{}
	}
	return rows
}

// moneyText writes amounts in several currencies ("12.50 EUR + 3.00 USD"), "0" for none.
func moneyText(ms []*analyticsv1.Money) string {
	if len(ms) == 0 {
		return "0"
	}
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmtMoney(m.GetAmountMicros(), m.GetCurrency())
	}
	return strings.Join(parts, " + ")
}

// Value is the conversion value, in words.
func (r variantRow) Value() string { return moneyText(r.M.GetConversionValue()) }

// PrevValue is the compared period's conversion value.
func (r variantRow) PrevValue() string { return moneyText(r.Prev.GetConversionValue()) }

// seriesRow is a bucket of the time series table, with the compared period's bucket at the
// same place (nil without compare, or where that period has fewer buckets).
type seriesRow struct {
	Start, PrevStart string
	// Label is the bucket's start, short, for the chart's axis.
	Label   string
	M, Prev *analyticsv1.Metrics
}

// breakdownRow is a row of the breakdown table.
type breakdownRow struct {
	Value string
	M     *analyticsv1.Metrics
}

// Label is the dimension's value as shown.
func (r breakdownRow) Label() string {
	if r.Value == "" {
		return "(none)"
	}
	return r.Value
}

func (r breakdownRow) CTR() ratio     { return ctrOf(r.M) }
func (r breakdownRow) CVR() ratio     { return cvrOf(r.M) }
func (r breakdownRow) Amount() string { return moneyText(r.M.GetConversionValue()) }

// funnelRow is a step of the funnel table.
type funnelRow struct {
	N                   int
	Step                string
	Users               int64
	FromStart, FromPrev ratio
}

// pacingView is the pacing section: the budget and today's allowance as numbers and bars.
type pacingView struct {
	P *campaignsv1.CampaignPacing
	// Problem says why pacing is not shown (e.g. no budget yet), in words.
	Problem string
}

// BudgetUsed is the share of the total budget spent (0 to 1, capped for the bar).
func (p pacingView) BudgetUsed() ratio {
	t := p.P.GetTotalBudgetMicros()
	return ratio{float64(p.P.GetTotalSpendMicros()) / float64(max(t, 1)), t > 0}
}

// analyticsView is the page's data.
type analyticsView struct {
	Campaign *campaignsv1.Campaign
	Q        analyticsQuery
	Base     string // the page's path
	Zones    []string
	Metrics  []struct {
		Value, Label string
		Metric       analyticsv1.Metric
	}
	Total, PrevTotal *analyticsv1.Metrics
	Variants         []variantRow
	VariantChart     chartView
	Series           []seriesRow
	SeriesChart      chartView
	Breakdown        []breakdownRow
	BreakdownChart   chartView
	EventNames       []string
	Funnel           []funnelRow
	FunnelChart      chartView
	Pacing           pacingView
	// Live is whether the range reaches now (the live counters count from its start).
	Live bool
	// LiveSrc is the live counters' stream.
	LiveSrc string
}

// PeriodText describes the range ("2026-05-01 – 2026-05-07 (Europe/Berlin)").
func (v analyticsView) PeriodText() string {
	return v.Q.From + " – " + v.Q.To + " (" + v.Q.Zone + ")"
}

// PrevPeriodText describes the compared range.
func (v analyticsView) PrevPeriodText() string {
	return v.Q.PrevStart.In(v.Q.loc).Format(time.DateOnly) + " – " + v.Q.PrevEnd.In(v.Q.loc).AddDate(0, 0, -1).Format(time.DateOnly)
}

// analyticsPage shows the screen.
func (c *Console) analyticsPage(rq *request) {
	camp, q, ok := rq.analyticsSetup()
	if !ok {
		return
	}
	id := camp.GetId()
	v := analyticsView{Campaign: camp, Q: q, Base: Prefix + "campaigns/" + url.PathEscape(id) + "/analytics", Zones: commonZones, Metrics: breakdownMetrics}
	if z := camp.GetSchedule().GetTimeZone(); z != "" && !slices.Contains(v.Zones, z) {
		v.Zones = append([]string{z}, v.Zones...)
	}

	cur, prev, err := rq.summaries(id, q)
	if err != nil {
		rq.fail(err)
		return
	}
	v.Total = cur.GetTotal()
	if prev != nil {
		v.PrevTotal = prev.GetTotal()
	}
	v.Variants = variantRows(variantNames(camp), cur.GetCampaigns(), prev.GetCampaigns(), prev != nil)
	v.VariantChart = variantChart(v.Variants).layout()

	series, prevSeries, err := rq.series(id, q)
	if err != nil {
		rq.fail(err)
		return
	}
	v.Series = seriesRows(q, series, prevSeries)
	v.SeriesChart = seriesChart(q, v.Series).layout()

	bd, err := rq.breakdown(id, q)
	if err != nil {
		rq.fail(err)
		return
	}
	for _, r := range bd.GetRows() {
		v.Breakdown = append(v.Breakdown, breakdownRow{Value: r.GetValue(), M: r.GetMetrics()})
	}
	v.BreakdownChart = breakdownChart(q, v.Breakdown).layout()

	// The funnel's step chooser suggests the event names this campaign's events have.
	names, err := rq.c.api.Analytics.GetBreakdown(rq.ctx, &analyticsv1.GetBreakdownRequest{CampaignId: id,
		StartTime: timestamppb.New(q.Start), EndTime: timestamppb.New(q.End), Dimension: analyticsv1.Dimension_DIMENSION_EVENT_NAME, Limit: eventNameHints})
	if err != nil {
		rq.fail(err)
		return
	}
	for _, r := range names.GetRows() {
		if r.GetValue() != "" {
			v.EventNames = append(v.EventNames, r.GetValue())
		}
	}
	if len(q.Steps) > 0 {
		f, err := rq.funnel(id, q)
		if err != nil {
			rq.fail(err)
			return
		}
		v.Funnel = funnelRows(f)
		v.FunnelChart = funnelChart(v.Funnel).layout()
	}

	if p, err := rq.c.api.Campaigns.GetCampaignPacing(rq.ctx, &campaignsv1.GetCampaignPacingRequest{Id: id}); err != nil {
		_, v.Pacing.Problem = explain(err)
	} else {
		v.Pacing.P = p
	}

	now := rq.now()
	v.Live = !now.Before(q.Start) && now.Before(q.End)
	v.LiveSrc = v.Base + "/live" + q.Query()
	rq.render("analytics", camp.GetName()+" · Analytics", v)
}

// analyticsSetup reads the campaign (for its time zone and variants) and the query; false
// when it answered already (an error page).
func (rq *request) analyticsSetup() (*campaignsv1.Campaign, analyticsQuery, bool) {
	if rq.c.api.Analytics == nil || rq.c.api.Campaigns == nil {
		rq.fail(errNoService)
		return nil, analyticsQuery{}, false
	}
	id := rq.r.PathValue("id")
	camp, err := rq.c.api.Campaigns.GetCampaign(rq.ctx, &campaignsv1.GetCampaignRequest{Id: id})
	if err != nil {
		rq.fail(err)
		return nil, analyticsQuery{}, false
	}
	q, err := parseAnalyticsQuery(rq.r.URL.Query(), rq.now(), camp.GetSchedule().GetTimeZone())
	if err != nil {
		rq.renderError(http.StatusBadRequest, err.Error())
		return nil, analyticsQuery{}, false
	}
	return camp, q, true
}

func variantNames(c *campaignsv1.Campaign) []string {
	var out []string
	for _, v := range c.GetVariants() {
		out = append(out, v.GetName())
	}
	return out
}

// summaries are the campaign's summary by variant over the range, and over the compared
// period (nil without compare).
func (rq *request) summaries(id string, q analyticsQuery) (cur, prev *analyticsv1.GetCampaignSummaryResponse, err error) {
	get := func(from, to time.Time) (*analyticsv1.GetCampaignSummaryResponse, error) {
		return rq.c.api.Analytics.GetCampaignSummary(rq.ctx, &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{id},
			StartTime: timestamppb.New(from), EndTime: timestamppb.New(to), ByVariant: true})
	}
	if cur, err = get(q.Start, q.End); err != nil || !q.Compare {
		return cur, nil, err
	}
	prev, err = get(q.PrevStart, q.PrevEnd)
	return cur, prev, err
}

// series are the campaign's buckets over the range and the compared period.
func (rq *request) series(id string, q analyticsQuery) (cur, prev *analyticsv1.GetMetricSeriesResponse, err error) {
	get := func(from, to time.Time) (*analyticsv1.GetMetricSeriesResponse, error) {
		return rq.c.api.Analytics.GetMetricSeries(rq.ctx, &analyticsv1.GetMetricSeriesRequest{CampaignId: id,
			StartTime: timestamppb.New(from), EndTime: timestamppb.New(to), Granularity: q.granularity(), TimeZone: q.Zone})
	}
	if cur, err = get(q.Start, q.End); err != nil || !q.Compare {
		return cur, nil, err
	}
	prev, err = get(q.PrevStart, q.PrevEnd)
	return cur, prev, err
}

// breakdown is the chosen breakdown: of this campaign's events, except by campaign, which
// compares the organization's campaigns.
func (rq *request) breakdown(id string, q analyticsQuery) (*analyticsv1.GetBreakdownResponse, error) {
	req := &analyticsv1.GetBreakdownRequest{CampaignId: id, StartTime: timestamppb.New(q.Start), EndTime: timestamppb.New(q.End),
		Dimension: breakdownDimensions[q.Dim], Metric: q.metric(), Limit: breakdownLimit}
	if q.Dim == "campaign" {
		req.CampaignId = ""
	}
	if q.Dim == "property" {
		req.PropertyKey = q.Key
	}
	return rq.c.api.Analytics.GetBreakdown(rq.ctx, req)
}

// funnel counts the chosen steps.
func (rq *request) funnel(id string, q analyticsQuery) (*analyticsv1.GetFunnelResponse, error) {
	req := &analyticsv1.GetFunnelRequest{StartTime: timestamppb.New(q.Start), EndTime: timestamppb.New(q.End), WindowSeconds: int64(q.WindowHours) * 3600}
	for _, s := range q.Steps {
		st := &analyticsv1.FunnelStep{EventName: s}
		if !q.StepsAny {
			st.CampaignId = id
		}
		req.Steps = append(req.Steps, st)
	}
	return rq.c.api.Analytics.GetFunnel(rq.ctx, req)
}

func funnelRows(f *analyticsv1.GetFunnelResponse) []funnelRow {
	var rows []funnelRow
	for i, s := range f.GetSteps() {
		// The API answers 0 where a step before had nobody; that is no conversion rate.
		first := f.GetSteps()[0].GetUsers()
		prev := first
		if i > 0 {
			prev = f.GetSteps()[i-1].GetUsers()
		}
		rows = append(rows, funnelRow{N: i + 1, Step: s.GetStep().GetEventName(), Users: s.GetUsers(),
			FromStart: ratio{s.GetConversionFromStart(), first > 0}, FromPrev: ratio{s.GetConversionFromPrevious(), prev > 0}})
	}
	return rows
}

// bucketLabel writes a bucket's start in the query's zone, short for an axis.
func (q analyticsQuery) bucketLabel(t time.Time) string {
	if q.Gran == "hour" {
		return t.In(q.loc).Format("Jan 2 15:04")
	}
	return t.In(q.loc).Format("Jan 2")
}

func seriesRows(q analyticsQuery, cur, prev *analyticsv1.GetMetricSeriesResponse) []seriesRow {
	var rows []seriesRow
	for i, b := range cur.GetBuckets() {
		r := seriesRow{Start: b.GetStartTime().AsTime().In(q.loc).Format("2006-01-02 15:04 MST"), M: b.GetMetrics(),
			Label: q.bucketLabel(b.GetStartTime().AsTime())}
		if pb := prev.GetBuckets(); i < len(pb) {
			r.PrevStart = pb[i].GetStartTime().AsTime().In(q.loc).Format("2006-01-02 15:04 MST")
			r.Prev = pb[i].GetMetrics()
		}
		rows = append(rows, r)
	}
	return rows
}

// metricOf picks a count out of metrics by name.
func metricOf(m *analyticsv1.Metrics, name string) float64 {
	switch name {
	case "impressions":
		return float64(m.GetImpressions())
	case "clicks":
		return float64(m.GetClicks())
	case "conversions":
		return float64(m.GetConversions())
	case "unique_users":
		return float64(m.GetUniqueUsers())
	case "conversion_value":
		return float64(sumMicros(m.GetConversionValue())) / 1e6
	case "spend":
		return float64(sumMicros(m.GetSpend())) / 1e6
	}
	return float64(m.GetEvents())
}

func sumMicros(ms []*analyticsv1.Money) int64 {
	var n int64
	for _, m := range ms {
		n += m.GetAmountMicros()
	}
	return n
}

var chartMetrics = []struct{ Name, Label string }{{"impressions", "Impressions"}, {"clicks", "Clicks"}, {"conversions", "Conversions"}}

// seriesChart draws impressions, clicks and conversions over the buckets (the API's series
// are per campaign, not per variant), the compared period dashed in the same colours.
func seriesChart(q analyticsQuery, rows []seriesRow) chart {
	c := chart{Kind: lineChart, Label: fmt.Sprintf("Impressions, clicks and conversions per %s, %s to %s (%s)", q.Gran, q.From, q.To, q.Zone)}
	for i, m := range chartMetrics {
		s := chartSeries{Name: m.Label, Color: seriesColor(i)}
		p := chartSeries{Name: m.Label + " (previous period)", Color: seriesColor(i), Dashed: true}
		for _, r := range rows {
			s.Values = append(s.Values, metricOf(r.M, m.Name))
			if r.Prev != nil {
				p.Values = append(p.Values, metricOf(r.Prev, m.Name))
			}
		}
		c.Series = append(c.Series, s)
		if q.Compare {
			c.Series = append(c.Series, p)
		}
	}
	for _, r := range rows {
		c.X = append(c.X, r.Label)
	}
	return c
}

// variantChart draws the variants' impressions, clicks and conversions as grouped bars.
func variantChart(rows []variantRow) chart {
	c := chart{Kind: barChart, Label: "Impressions, clicks and conversions per variant"}
	for _, r := range rows {
		c.X = append(c.X, r.Label())
	}
	for _, m := range chartMetrics {
		s := chartSeries{Name: m.Label}
		for _, r := range rows {
			s.Values = append(s.Values, metricOf(r.M, m.Name))
		}
		c.Series = append(c.Series, s)
	}
	return c
}

func breakdownChart(q analyticsQuery, rows []breakdownRow) chart {
	label := "Unknown"
	for _, m := range breakdownMetrics {
		if m.Value == q.Metric {
			label = m.Label
		}
	}
	c := chart{Kind: barChart, Label: label + " by " + q.Dim}
	s := chartSeries{Name: label}
	for _, r := range rows {
		c.X = append(c.X, r.Label())
		s.Values = append(s.Values, metricOf(r.M, q.Metric))
	}
	c.Series = []chartSeries{s}
	return c
}

func funnelChart(rows []funnelRow) chart {
	c := chart{Kind: barChart, Label: "Users who reached each step of the funnel"}
	s := chartSeries{Name: "Users"}
	for _, r := range rows {
		c.X = append(c.X, strconv.Itoa(r.N)+". "+r.Step)
		s.Values = append(s.Values, float64(r.Users))
	}
	c.Series = []chartSeries{s}
	return c
}

// analyticsLive streams the campaign's counters (WatchCampaignMetrics from the range's start)
// as text/event-stream "counters" events until the browser goes away (its request's context
// ends the RPC) or the API ends the stream (the browser's EventSource reconnects). A refusal
// before the first push is an HTTP error (403 for a role without analytics.read); one during
// the stream is a "problem" event that the page shows.
func (c *Console) analyticsLive(rq *request) {
	if c.api.Analytics == nil {
		code, msg := explain(errNoService)
		http.Error(rq.w, msg, code)
		return
	}
	id := rq.r.PathValue("id")
	q, err := parseAnalyticsQuery(rq.r.URL.Query(), rq.now(), "")
	if err != nil {
		http.Error(rq.w, err.Error(), http.StatusBadRequest)
		return
	}
	if !rq.now().Before(q.End) {
		http.Error(rq.w, "Live counters need a range that reaches today.", http.StatusBadRequest)
		return
	}
	watch, err := c.api.Analytics.WatchCampaignMetrics(rq.ctx, &analyticsv1.WatchCampaignMetricsRequest{CampaignId: id,
		IntervalSeconds: liveInterval, StartTime: timestamppb.New(q.Start)})
	var first *analyticsv1.WatchCampaignMetricsResponse
	if err == nil {
		first, err = watch.Recv()
	}
	if err != nil {
		if rq.r.Context().Err() != nil {
			return
		}
		code, msg := explain(err)
		if errors.Is(err, io.EOF) {
			code, msg = http.StatusServiceUnavailable, "The live counters ended; they reconnect in a moment."
		}
		http.Error(rq.w, msg, code)
		return
	}
	s := rq.stream()
	defer s.close()
	for push := first; ; {
		m := push.GetMetrics()
		if s.send("counters", liveCounters{Impressions: m.GetImpressions(), Clicks: m.GetClicks(), Conversions: m.GetConversions()}) != nil {
			return // the browser went away
		}
		if push, err = watch.Recv(); err != nil {
			if rq.r.Context().Err() != nil || errors.Is(err, io.EOF) {
				return
			}
			_, msg := explain(err)
			_ = s.send("problem", map[string]string{"message": msg})
			return
		}
	}
}

// liveCounters is one push of the live counters to the page.
type liveCounters struct {
	Impressions int64 `json:"impressions"`
	Clicks      int64 `json:"clicks"`
	Conversions int64 `json:"conversions"`
}

// CSV downloads: the same query, the same RPCs, the numbers as the API gives them.

func (c *Console) variantsCSV(rq *request) {
	camp, q, ok := rq.analyticsSetup()
	if !ok {
		return
	}
	cur, prev, err := rq.summaries(camp.GetId(), q)
	if err != nil {
		rq.fail(err)
		return
	}
	rows := variantRows(variantNames(camp), cur.GetCampaigns(), prev.GetCampaigns(), prev != nil)
	rq.sendCSV("campaign-"+camp.GetId()+"-variants.csv", variantsTable(rows, prev != nil))
}

// variantsTable is the variants table as CSV: a row per variant, then (with compare) a row
// per variant of the previous period.
func variantsTable(rows []variantRow, compare bool) csvTable {
	var all []*analyticsv1.Metrics
	for _, r := range rows {
		all = append(all, r.M)
		if compare {
			all = append(all, r.Prev)
		}
	}
	currencies := currenciesOf(all, (*analyticsv1.Metrics).GetConversionValue)
	t := csvTable{Header: append([]string{"period", "variant", "baseline", "impressions", "clicks", "conversions", "events", "unique_users",
		"ctr", "cvr", "ctr_uplift", "cvr_uplift"}, currencyColumns("conversion_value_", currencies)...)}
	line := func(period string, r variantRow, m *analyticsv1.Metrics, up1, up2 ratio) []string {
		return append([]string{period, r.Name, strconv.FormatBool(r.Baseline), csvInt(m.GetImpressions()), csvInt(m.GetClicks()), csvInt(m.GetConversions()),
			csvInt(m.GetEvents()), csvInt(m.GetUniqueUsers()), csvRatio(ctrOf(m)), csvRatio(cvrOf(m)), csvRatio(up1), csvRatio(up2)},
			amounts(m.GetConversionValue(), currencies)...)
	}
	for _, r := range rows {
		t.Rows = append(t.Rows, line("current", r, r.M, r.CTRUplift, r.CVRUplift))
	}
	if compare && len(rows) > 0 {
		prev := make([]variantRow, len(rows))
		for i, r := range rows {
			prev[i] = variantRow{Name: r.Name, M: r.Prev}
		}
		// The previous period's uplifts, against its own baseline.
		base := prev[0]
		for i, r := range prev {
			up1, up2 := uplift(ctrOf(r.M), ctrOf(base.M)), uplift(cvrOf(r.M), cvrOf(base.M))
			if i == 0 {
				up1, up2 = ratio{}, ratio{}
			}
			r.Baseline = i == 0
			t.Rows = append(t.Rows, line("previous", r, r.M, up1, up2))
		}
	}
	return t
}

func (c *Console) seriesCSV(rq *request) {
	camp, q, ok := rq.analyticsSetup()
	if !ok {
		return
	}
	cur, prev, err := rq.series(camp.GetId(), q)
	if err != nil {
		rq.fail(err)
		return
	}
	rq.sendCSV("campaign-"+camp.GetId()+"-series.csv", seriesTable(q, cur, prev))
}

// seriesTable is the series as CSV: a row per bucket (its start in RFC 3339 with the zone's
// offset), then the previous period's buckets.
func seriesTable(q analyticsQuery, cur, prev *analyticsv1.GetMetricSeriesResponse) csvTable {
	var all []*analyticsv1.Metrics
	for _, b := range append(slices.Clone(cur.GetBuckets()), prev.GetBuckets()...) {
		all = append(all, b.GetMetrics())
	}
	currencies := currenciesOf(all, (*analyticsv1.Metrics).GetConversionValue)
	t := csvTable{Header: append([]string{"period", "bucket_start", "impressions", "clicks", "conversions", "events", "unique_users", "ctr", "cvr"},
		currencyColumns("conversion_value_", currencies)...)}
	add := func(period string, bs []*analyticsv1.Bucket) {
		for _, b := range bs {
			m := b.GetMetrics()
			t.Rows = append(t.Rows, append([]string{period, b.GetStartTime().AsTime().In(q.loc).Format(time.RFC3339), csvInt(m.GetImpressions()),
				csvInt(m.GetClicks()), csvInt(m.GetConversions()), csvInt(m.GetEvents()), csvInt(m.GetUniqueUsers()), csvRatio(ctrOf(m)), csvRatio(cvrOf(m))},
				amounts(m.GetConversionValue(), currencies)...))
		}
	}
	add("current", cur.GetBuckets())
	if prev != nil {
		add("previous", prev.GetBuckets())
	}
	return t
}

func (c *Console) breakdownCSV(rq *request) {
	camp, q, ok := rq.analyticsSetup()
	if !ok {
		return
	}
	bd, err := rq.breakdown(camp.GetId(), q)
	if err != nil {
		rq.fail(err)
		return
	}
	rq.sendCSV("campaign-"+camp.GetId()+"-breakdown.csv", breakdownTable(q, bd))
}

// breakdownTable is the breakdown as CSV, a row per value in the API's order.
func breakdownTable(q analyticsQuery, bd *analyticsv1.GetBreakdownResponse) csvTable {
	var all []*analyticsv1.Metrics
	for _, r := range bd.GetRows() {
		all = append(all, r.GetMetrics())
	}
	currencies := currenciesOf(all, (*analyticsv1.Metrics).GetConversionValue)
	dim := q.Dim
	if dim == "property" {
		dim = "property:" + q.Key
	}
	t := csvTable{Header: append([]string{dim, "events", "impressions", "clicks", "conversions", "unique_users", "ctr", "cvr"},
		currencyColumns("conversion_value_", currencies)...)}
	for _, r := range bd.GetRows() {
		m := r.GetMetrics()
		t.Rows = append(t.Rows, append([]string{r.GetValue(), csvInt(m.GetEvents()), csvInt(m.GetImpressions()), csvInt(m.GetClicks()),
			csvInt(m.GetConversions()), csvInt(m.GetUniqueUsers()), csvRatio(ctrOf(m)), csvRatio(cvrOf(m))}, amounts(m.GetConversionValue(), currencies)...))
	}
	return t
}

func (c *Console) funnelCSV(rq *request) {
	camp, q, ok := rq.analyticsSetup()
	if !ok {
		return
	}
	if len(q.Steps) == 0 {
		rq.renderError(http.StatusBadRequest, "Choose the funnel's steps (at least 2) before downloading it.")
		return
	}
	f, err := rq.funnel(camp.GetId(), q)
	if err != nil {
		rq.fail(err)
		return
	}
	t := csvTable{Header: []string{"step", "event_name", "users", "conversion_from_start", "conversion_from_previous"}}
	for _, r := range funnelRows(f) {
		t.Rows = append(t.Rows, []string{strconv.Itoa(r.N), r.Step, csvInt(r.Users), csvRatio(r.FromStart), csvRatio(r.FromPrev)})
	}
	rq.sendCSV("campaign-"+camp.GetId()+"-funnel.csv", t)
}

// currenciesOf lists the currencies of the amounts in ms, sorted.
func currenciesOf(ms []*analyticsv1.Metrics, get func(*analyticsv1.Metrics) []*analyticsv1.Money) []string {
	var out []string
	for _, m := range ms {
		for _, a := range get(m) {
			if !slices.Contains(out, a.GetCurrency()) {
				out = append(out, a.GetCurrency())
			}
		}
	}
	sort.Strings(out)
	return out
}

func currencyColumns(prefix string, currencies []string) []string {
	out := make([]string, len(currencies))
	for i, c := range currencies {
		out[i] = prefix + c
	}
	return out
}

// amounts are the amounts of ms in the currencies' columns (0 where a currency is absent).
func amounts(ms []*analyticsv1.Money, currencies []string) []string {
	out := make([]string, len(currencies))
	for i, c := range currencies {
		var n int64
		for _, m := range ms {
			if m.GetCurrency() == c {
				n += m.GetAmountMicros()
			}
		}
		out[i] = csvMicros(n)
	}
	return out
}
