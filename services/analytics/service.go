package analytics

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// Limits bound every question (the documented defaults are DefaultLimits).
type Limits struct {
	// ConcurrentPerTenant is how many queries of one tenant run at once; more are refused.
	ConcurrentPerTenant int
	// LiveStreamsPerTenant is how many live metric streams one tenant may hold open.
	LiveStreamsPerTenant int
	// MaxRange bounds summaries and breakdowns; series ranges are bounded per granularity
	// (1 day of minutes, 31 days of hours, 400 days of days) and funnels by MaxFunnelRange.
	MaxRange, MaxFunnelRange time.Duration
	// DefaultRange is used when a request has no start.
	DefaultRange time.Duration
}

// DefaultLimits are the documented defaults.
var DefaultLimits = Limits{ConcurrentPerTenant: 4, LiveStreamsPerTenant: 20, MaxRange: 400 * 24 * time.Hour,
	MaxFunnelRange: 90 * 24 * time.Hour, DefaultRange: 7 * 24 * time.Hour}

// ErrTooExpensive is what the store returns when ClickHouse stopped a query at its time,
// memory or result-size limit.
var ErrTooExpensive = apperr.New(apperr.ResourceExhausted, "QUERY_TOO_EXPENSIVE", "the query exceeded its time or size limit; narrow the range or the filters")

// ErrStoreUnavailable is what the store returns (wrapping the cause) when it cannot reach
// ClickHouse: the connection is refused, broken or times out. Callers see UNAVAILABLE with a
// retry delay, the answer a client retries on, not INTERNAL.
var ErrStoreUnavailable = func() error {
	e := apperr.New(apperr.Unavailable, "STORE_UNAVAILABLE", "the analytics store cannot be reached right now; retry shortly")
	e.RetryAfter = 2 * time.Second
	return e
}()

// ErrTimeZoneUnsupported is what the store returns when ClickHouse does not know a time zone
// that LoadTimeZone accepted (its zone database differs from Go's).
var ErrTimeZoneUnsupported = func() error {
	var v apperr.Violations
	v.Add("time_zone", "is not a time zone the analytics store knows; use an IANA name such as Europe/Berlin")
	return v.Err()
}()

// ianaZone is the shape of an IANA zone name: Area/Location (or a bare name such as UTC),
// letters, digits, '_', '-', '+'.
var ianaZone = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$`)

// LoadTimeZone loads an IANA time zone by name. It refuses what Go's time.LoadLocation takes
// but is not a zone name a caller should use and ClickHouse may not know: "Local" (the
// server's own zone), the zoneinfo directory's other files ("localtime", "posixrules") and
// its "posix/" and "right/" copies — ClickHouse 18.16 cannot load any "right/" (leap-second)
// zone and answered such a query with an exception.
func LoadTimeZone(name string) (*time.Location, error) {
	if len(name) > 64 || !ianaZone.MatchString(name) || name == "Local" || name == "localtime" || name == "posixrules" ||
		strings.HasPrefix(name, "right/") || strings.HasPrefix(name, "posix/") {
		return nil, fmt.Errorf("time zone %q: not an IANA zone name", name)
	}
	return time.LoadLocation(name)
}

// Bounds on request fields.
const (
	maxCampaigns      = 100
	maxSpendCampaigns = 1000
	maxIDLen          = 200
	maxBreakdownRows  = 1000
	maxFunnelSteps    = 10
	maxFunnelWindow   = 90 * 24 * time.Hour
)

var seriesRange = map[Granularity]time.Duration{Minute: 24 * time.Hour, Hour: 31 * 24 * time.Hour, Day: 400 * 24 * time.Hour}

// Service answers the analytics API for a tenant.
type Service struct {
	store  Store
	limits Limits
	now    func() time.Time

	mu      sync.Mutex
	running map[string]int // queries in flight per tenant
	live    map[string]int // open live streams per tenant
}

// NewService returns a service over store.
func NewService(store Store, limits Limits) *Service {
	return &Service{store: store, limits: limits, now: time.Now, running: map[string]int{}, live: map[string]int{}}
}

// aggregate runs q under the tenant's concurrency limit.
func (s *Service) aggregate(ctx context.Context, q Query) ([]Aggregate, error) {
	release, err := s.acquire(q.TenantID)
	if err != nil {
		return nil, err
	}
	defer release()
	return s.store.Aggregate(ctx, q)
}

// acquire counts a query against the tenant's limit; call the returned func when it ends.
func (s *Service) acquire(tenant string) (func(), error) {
	return s.take(s.running, tenant, s.limits.ConcurrentPerTenant, func() *apperr.Error {
		e := apperr.New(apperr.ResourceExhausted, "TOO_MANY_QUERIES", "too many analytics queries at once for this tenant (limit %d); retry shortly", s.limits.ConcurrentPerTenant)
		e.RetryAfter = time.Second
		return e
	})
}

// openLive counts a live stream against the tenant's limit; call the returned func when it ends.
func (s *Service) openLive(tenant string) (func(), error) {
	return s.take(s.live, tenant, s.limits.LiveStreamsPerTenant, func() *apperr.Error {
		e := apperr.New(apperr.ResourceExhausted, "TOO_MANY_STREAMS", "too many live metric streams open for this tenant (limit %d)", s.limits.LiveStreamsPerTenant)
		e.RetryAfter = 10 * time.Second
		return e
	})
}

// take adds one to the tenant's count in counts unless it is at limit (then refused()).
func (s *Service) take(counts map[string]int, tenant string, limit int, refused func() *apperr.Error) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if counts[tenant] >= limit {
		return nil, refused()
	}
	counts[tenant]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if counts[tenant]--; counts[tenant] == 0 {
			delete(counts, tenant)
		}
	}, nil
}

// The times a query may name: ClickHouse's DateTime holds 1970 to early 2106, and a query
// range grows by its funnel window and bucket alignment before it reaches the store (a
// year-9999 end became "10000-01-01", which ClickHouse could not parse: a 500).
var (
	storeFirst = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	storeLast  = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

// timeRange resolves a request's range: no end means up to now, open-ended (events stamped a
// little ahead included); no start means DefaultRange before the end's hour.
func (s *Service) timeRange(v *apperr.Violations, start, end RequestTime, limit time.Duration) (from, to time.Time, open bool) {
	to, open = s.now().UTC().Truncate(time.Second), true
	if end.Given {
		if end.Invalid {
			v.Add("end_time", "is not a valid time")
			return
		}
		to, open = end.Time.UTC(), false
	}
	from = to.Truncate(time.Hour).Add(-s.limits.DefaultRange)
	if start.Given {
		if start.Invalid {
			v.Add("start_time", "is not a valid time")
			return
		}
		from = start.Time.UTC()
	}
	switch {
	case from.Before(storeFirst) || from.After(storeLast):
		v.Add("start_time", "must be between %s and %s", storeFirst.Format(time.DateOnly), storeLast.Format(time.DateOnly))
	case to.Before(storeFirst) || to.After(storeLast):
		v.Add("end_time", "must be between %s and %s", storeFirst.Format(time.DateOnly), storeLast.Format(time.DateOnly))
	case !from.Before(to):
		v.Add("start_time", "must be before end_time")
	case to.Sub(from) > limit:
		v.Add("end_time", "range is longer than %s (%d days)", limit, int(limit.Hours()/24))
	}
	return from, to, open
}

// chooseSource decides between rollups and raw for q, honouring an explicit request.
func chooseSource(v *apperr.Violations, q *Query, want Source) Source {
	switch want {
	case SourceRaw:
		return want
	case SourceRollup:
		if !canUseRollup(*q) {
			v.Add("source", "the rollups cannot answer this query (they need whole UTC hours, hour or day buckets in a whole-hour time zone, and campaign, variant or type dimensions)")
		}
		q.Rollup = true
		return want
	}
	if canUseRollup(*q) {
		q.Rollup = true
		return SourceRollup
	}
	return SourceRaw
}

func checkIDs(v *apperr.Violations, field string, ids []string, atLeast, atMost int) []string {
	if len(ids) < atLeast || len(ids) > atMost {
		v.Add(field, "needs %d to %d ids", atLeast, atMost)
		return nil
	}
	out := make([]string, 0, len(ids))
	for i, id := range ids {
		if id == "" || len(id) > maxIDLen {
			v.Add(field+"["+strconv.Itoa(i)+"]", "must be 1 to %d bytes", maxIDLen)
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// Summary answers GetCampaignSummary for the tenant.
func (s *Service) Summary(ctx context.Context, tenant string, req SummaryRequest) (SummaryResult, error) {
	var v apperr.Violations
	ids := checkIDs(&v, "campaign_ids", req.CampaignIDs, 1, maxCampaigns)
	from, to, open := s.timeRange(&v, req.Start, req.End, s.limits.MaxRange)
	q := Query{TenantID: tenant, CampaignIDs: ids, Start: from, End: to, OpenEnd: open, Dimension: Campaign,
		ExactUsers: req.ExactUniqueUsers}
	if req.ByVariant {
		q.Dimension = CampaignVariant
	}
	// One campaign without variants: its row is the total; otherwise distinct users across
	// the rows need the total over them, which the same query returns.
	q.Total = len(ids) > 1 || q.Dimension == CampaignVariant
	source := chooseSource(&v, &q, req.Source)
	if err := v.Err(); err != nil {
		return SummaryResult{}, err
	}
	rows, err := s.aggregate(ctx, q)
	if err != nil {
		return SummaryResult{}, err
	}
	total := first(rows)
	if q.Total {
		rows, total = splitTotal(rows)
	}
	resp := SummaryResult{Source: source, Total: metricsOf(total)}
	slices.SortFunc(rows, func(a, b Aggregate) int {
		if c := slices.Index(ids, a.K1) - slices.Index(ids, b.K1); c != 0 {
			return c
		}
		return compareStrings(a.K2, b.K2)
	})
	for _, id := range ids {
		found := false
		for _, r := range rows {
			if r.K1 == id {
				resp.Campaigns = append(resp.Campaigns, CampaignMetrics{CampaignID: id, Variant: r.K2, Metrics: metricsOf(r)})
				found = true
			}
		}
		if !found {
			resp.Campaigns = append(resp.Campaigns, CampaignMetrics{CampaignID: id, Metrics: metricsOf(Aggregate{})})
		}
	}
	return resp, nil
}

// splitTotal separates the total row (Query.Total) from the groups' rows.
func splitTotal(rows []Aggregate) (groups []Aggregate, total Aggregate) {
	for _, r := range rows {
		if r.Total {
			total = r
		} else {
			groups = append(groups, r)
		}
	}
	return groups, total
}

func first(rows []Aggregate) Aggregate {
	if len(rows) == 0 {
		return Aggregate{}
	}
	return rows[0]
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Series answers GetMetricSeries for the tenant.
func (s *Service) Series(ctx context.Context, tenant string, req SeriesRequest) (SeriesResult, error) {
	var v apperr.Violations
	g := req.Granularity
	limit, ok := seriesRange[g]
	if !ok {
		v.Add("granularity", "must be minute, hour or day")
		limit = seriesRange[Day]
	}
	tz := req.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	loc, err := LoadTimeZone(tz)
	if err != nil {
		v.Add("time_zone", "is not an IANA time zone name (e.g. Europe/Berlin)")
		loc = time.UTC
	}
	if c := req.CampaignID; len(c) > maxIDLen {
		v.Add("campaign_id", "must be at most %d bytes", maxIDLen)
	}
	from, to, open := s.timeRange(&v, req.Start, req.End, limit)
	if err := v.Err(); err != nil {
		return SeriesResult{}, err
	}
	starts := bucketStarts(g, loc, from, to)
	q := Query{TenantID: tenant, Start: starts[0], End: to, OpenEnd: open, Dimension: Bucket, Granularity: g, Location: loc,
		ExactUsers: req.ExactUniqueUsers}
	if c := req.CampaignID; c != "" {
		q.CampaignIDs = []string{c}
	}
	source := chooseSource(&v, &q, req.Source)
	if err := v.Err(); err != nil {
		return SeriesResult{}, err
	}
	rows, err := s.aggregate(ctx, q)
	if err != nil {
		return SeriesResult{}, err
	}
	byStart := make(map[string]Aggregate, len(rows))
	for _, r := range rows {
		byStart[r.K1] = r
	}
	resp := SeriesResult{Source: source, Buckets: make([]BucketMetrics, len(starts))}
	for i, t := range starts {
		resp.Buckets[i] = BucketMetrics{Start: t, Metrics: metricsOf(byStart[strconv.FormatInt(t.Unix(), 10)])}
	}
	return resp, nil
}

// bucketStarts lists the starts of the buckets covering [from, to): from aligned down to its
// bucket in loc; days run from midnight to midnight in loc (23 or 25 hours across DST).
func bucketStarts(g Granularity, loc *time.Location, from, to time.Time) []time.Time {
	var out []time.Time
	l := from.In(loc)
	var t time.Time
	switch g {
	case Minute:
		t = from.Truncate(time.Minute)
	case Hour:
		// A local hour starts where the local clock shows :00 (UTC :30 in half-hour zones).
		t = time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), 0, 0, 0, loc)
		if t.After(from) { // a repeated hour at a DST fall-back: Date picked the later one
			t = t.Add(-time.Hour)
		}
	default:
		t = time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, loc)
	}
	for t.Before(to) {
		out = append(out, t.UTC())
		switch g {
		case Minute:
			t = t.Add(time.Minute)
		case Hour:
			t = t.Add(time.Hour)
		default:
			l := t.In(loc)
			t = time.Date(l.Year(), l.Month(), l.Day()+1, 0, 0, 0, 0, loc)
		}
	}
	if len(out) == 0 {
		out = append(out, t.UTC())
	}
	return out
}

// breakdownDimensions are the dimensions a breakdown can group by.
var breakdownDimensions = []Dimension{EventName, EventType, Campaign, Variant, App, Device, Locale, Property}

// Breakdown answers GetBreakdown for the tenant.
func (s *Service) Breakdown(ctx context.Context, tenant string, req BreakdownRequest) (BreakdownResult, error) {
	var v apperr.Violations
	dim := req.Dimension
	if !slices.Contains(breakdownDimensions, dim) {
		v.Add("dimension", "is required (event name, type, campaign, variant, app, device, locale or property)")
	}
	if dim == Property && (req.PropertyKey == "" || len(req.PropertyKey) > 128) {
		v.Add("property_key", "is required for a property breakdown (at most 128 bytes)")
	}
	metric := req.Metric
	if !metric.valid() {
		v.Add("metric", "is not a known metric")
	}
	limit := req.Limit
	switch {
	case limit == 0:
		limit = 10
	case limit < 0 || limit > maxBreakdownRows:
		v.Add("limit", "must be 1 to %d", maxBreakdownRows)
	}
	if c := req.CampaignID; len(c) > maxIDLen {
		v.Add("campaign_id", "must be at most %d bytes", maxIDLen)
	}
	from, to, open := s.timeRange(&v, req.Start, req.End, s.limits.MaxRange)
	q := Query{TenantID: tenant, Start: from, End: to, OpenEnd: open, Dimension: dim, PropertyKey: req.PropertyKey, OrderBy: metric, Limit: limit,
		ExactUsers: req.ExactUniqueUsers}
	if c := req.CampaignID; c != "" {
		q.CampaignIDs = []string{c}
	}
	source := chooseSource(&v, &q, req.Source)
	if err := v.Err(); err != nil {
		return BreakdownResult{}, err
	}
	rows, err := s.aggregate(ctx, q)
	if err != nil {
		return BreakdownResult{}, err
	}
	resp := BreakdownResult{Source: source, Rows: make([]BreakdownRow, len(rows))}
	for i, r := range rows {
		resp.Rows[i] = BreakdownRow{Value: r.K1, Metrics: metricsOf(r)}
	}
	return resp, nil
}

// Funnel answers GetFunnel for the tenant.
func (s *Service) Funnel(ctx context.Context, tenant string, req FunnelRequest) (FunnelResult, error) {
	var v apperr.Violations
	steps := req.Steps
	if len(steps) < 2 || len(steps) > maxFunnelSteps {
		v.Add("steps", "needs 2 to %d steps", maxFunnelSteps)
	}
	q := FunnelQuery{TenantID: tenant, Window: 24 * time.Hour}
	for i, st := range steps {
		if st.EventName == "" || len(st.EventName) > maxIDLen || len(st.CampaignID) > maxIDLen {
			v.Add("steps["+strconv.Itoa(i)+"]", "needs an event name of 1 to %d bytes (campaign id at most %d)", maxIDLen, maxIDLen)
		}
		q.Steps = append(q.Steps, st)
	}
	if w := req.WindowSeconds; w != 0 {
		if w < 1 || time.Duration(w)*time.Second > maxFunnelWindow {
			v.Add("window_seconds", "must be 1 s to 90 days")
		}
		q.Window = time.Duration(w) * time.Second
	}
	q.Start, q.End, q.OpenEnd = s.timeRange(&v, req.Start, req.End, s.limits.MaxFunnelRange)
	if err := v.Err(); err != nil {
		return FunnelResult{}, err
	}
	release, err := s.acquire(tenant)
	if err != nil {
		return FunnelResult{}, err
	}
	defer release()
	users, err := s.store.Funnel(ctx, q)
	if err != nil {
		return FunnelResult{}, err
	}
	var resp FunnelResult
	for i, st := range steps {
		r := FunnelStepResult{Step: st, Users: users[i]}
		r.ConversionFromStart = ratio(users[i], users[0])
		r.ConversionFromPrevious = 1
		if i > 0 {
			r.ConversionFromPrevious = ratio(users[i], users[i-1])
		}
		resp.Steps = append(resp.Steps, r)
	}
	return resp, nil
}

// MaxLiveStream is how long a live metrics stream runs before the server ends it (clients
// reconnect), so no stream holds resources forever.
const MaxLiveStream = time.Hour

// Watch answers WatchCampaignMetrics for the tenant: it checks req, counts the stream against
// the tenant's limit, then pushes the campaign's metrics at once and every interval until ctx
// ends or MaxLiveStream has passed (both end the stream without an error). push gets the time
// of each push; its error ends the stream.
func (s *Service) Watch(ctx context.Context, tenant string, req WatchRequest, push func(at time.Time, m Metrics) error) error {
	campaign, interval, start, err := s.checkWatch(req)
	if err != nil {
		return err
	}
	exact := req.ExactUniqueUsers
	release, err := s.openLive(tenant)
	if err != nil {
		return err
	}
	defer release()
	ctx, cancel := context.WithTimeout(ctx, MaxLiveStream)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		m, err := s.liveMetrics(ctx, tenant, campaign, start, exact)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := push(s.now(), m); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// checkWatch checks a live stream request and returns its campaign, interval and start.
func (s *Service) checkWatch(req WatchRequest) (string, time.Duration, time.Time, error) {
	var v apperr.Violations
	if c := req.CampaignID; c == "" || len(c) > maxIDLen {
		v.Add("campaign_id", "is required (at most %d bytes)", maxIDLen)
	}
	interval := 5 * time.Second
	if n := req.IntervalSeconds; n != 0 {
		if n < 1 || n > 60 {
			v.Add("interval_seconds", "must be 1 to 60")
		}
		interval = time.Duration(n) * time.Second
	}
	start := s.now().UTC().Truncate(24 * time.Hour)
	if t := req.Start; t.Given {
		if t.Invalid || s.now().Sub(t.Time) > s.limits.MaxRange {
			v.Add("start_time", "must be a time within the last %d days", int(s.limits.MaxRange.Hours()/24))
		}
		start = t.Time.UTC()
	}
	return req.CampaignID, interval, start, v.Err()
}

// liveMetrics reads a campaign's metrics from start until now (one push of a live stream).
func (s *Service) liveMetrics(ctx context.Context, tenant, campaign string, start time.Time, exactUsers bool) (Metrics, error) {
	q := Query{TenantID: tenant, CampaignIDs: []string{campaign}, Start: start, OpenEnd: true, Dimension: NoDimension, ExactUsers: exactUsers}
	q.Rollup = canUseRollup(q)
	rows, err := s.aggregate(ctx, q)
	if err != nil {
		return Metrics{}, err
	}
	return metricsOf(first(rows)), nil
}

// Spend answers GetCampaignSpend (internal): the spend of the named tenant's campaigns.
func (s *Service) Spend(ctx context.Context, req SpendRequest) ([]CampaignSpend, error) {
	var v apperr.Violations
	if t := req.TenantID; t == "" || len(t) > maxIDLen {
		v.Add("tenant_id", "is required")
	}
	ids := checkIDs(&v, "campaign_ids", req.CampaignIDs, 1, maxSpendCampaigns)
	if !req.Start.Given || !req.End.Given {
		v.Add("start_time", "start_time and end_time are required")
	}
	from, to, _ := s.timeRange(&v, req.Start, req.End, s.limits.MaxRange)
	q := Query{TenantID: req.TenantID, CampaignIDs: ids, Start: from, End: to, Dimension: Campaign}
	chooseSource(&v, &q, SourceAuto)
	if err := v.Err(); err != nil {
		return nil, err
	}
	rows, err := s.aggregate(ctx, q)
	if err != nil {
		return nil, err
	}
	var spends []CampaignSpend
	for _, r := range rows {
		for i, c := range r.Currencies {
			if r.Spend[i] != 0 {
				spends = append(spends, CampaignSpend{CampaignID: r.K1, SpendMicros: r.Spend[i], Currency: c})
			}
		}
	}
	return spends, nil
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// metricsOf turns one group's aggregate into metrics: rates, per-currency money, and the cost
// per conversion when the spend is in one currency.
func metricsOf(a Aggregate) Metrics {
	m := Metrics{Events: a.Events, Impressions: a.Impressions, Clicks: a.Clicks, Conversions: a.Conversions,
		UniqueUsers: a.UniqueUsers, CTR: ratio(a.Clicks, a.Impressions), CVR: ratio(a.Conversions, a.Clicks)}
	for i, c := range a.Currencies {
		if a.ConversionValue[i] != 0 {
			m.ConversionValue = append(m.ConversionValue, Money{AmountMicros: a.ConversionValue[i], Currency: c})
		}
		if a.Spend[i] != 0 {
			m.Spend = append(m.Spend, Money{AmountMicros: a.Spend[i], Currency: c})
		}
	}
	byCurrency := func(x, y Money) int { return compareStrings(x.Currency, y.Currency) }
	slices.SortFunc(m.ConversionValue, byCurrency)
	slices.SortFunc(m.Spend, byCurrency)
	if len(m.Spend) == 1 && a.Conversions > 0 {
		m.CostPerConversion = &Money{AmountMicros: m.Spend[0].AmountMicros / a.Conversions, Currency: m.Spend[0].Currency}
	}
	return m
}

// Delete answers DeleteEvents (internal): one data subject's events, or a time range's.
func (s *Service) Delete(ctx context.Context, req DeleteRequest) (DeletionStatus, error) {
	var v apperr.Violations
	if t := req.TenantID; t == "" || len(t) > maxIDLen {
		v.Add("tenant_id", "is required")
	}
	d := Deletion{TenantID: req.TenantID, SubjectID: req.SubjectID}
	hasRange := req.Start.Given || req.End.Given
	switch {
	case d.SubjectID != "" && hasRange, d.SubjectID == "" && !hasRange:
		v.Add("subject_id", "give either a subject id or a time range")
	case len(d.SubjectID) > maxIDLen:
		v.Add("subject_id", "must be at most %d bytes", maxIDLen)
	case hasRange:
		if !req.Start.usable() || !req.End.usable() {
			v.Add("start_time", "start_time and end_time must both be valid times")
		} else if d.Start, d.End = req.Start.Time.UTC(), req.End.Time.UTC(); !d.Start.Before(d.End) {
			v.Add("start_time", "must be before end_time")
		}
		// No event lies outside the store's range: deleting "all time" keeps meaning that.
		if d.Start.Before(storeFirst) {
			d.Start = storeFirst
		}
		if d.End.After(storeLast) {
			d.End = storeLast
		}
		if d.End.Before(d.Start) {
			d.End = d.Start
		}
	}
	if err := v.Err(); err != nil {
		return DeletionStatus{}, err
	}
	return s.store.Delete(ctx, d)
}
