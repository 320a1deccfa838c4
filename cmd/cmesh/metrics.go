package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // -tz must not depend on the zone database of the machine cmesh runs on

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
)

// rangeDetails explains the time flags the metrics commands share.
const rangeDetails = `Times: -since, -from and -to take an RFC 3339 time (2026-11-01T00:00:00Z) or a duration
before now (90m, 24h, 7d, 2w, 1d12h). -since T is -from T. Without -to (or with -to now)
the range runs up to the server's clock and takes in events stamped slightly ahead.`

// hourDetails explains the alignment of the commands the hourly rollups can answer.
const hourDetails = `A duration of whole hours (24h, 7d) counts back from the start of the current hour, so
that the hourly rollups can answer; give RFC 3339 times for an exact range.`

// credentialDetails says how scripts authenticate.
const credentialDetails = `The caller needs the analytics.read permission. Scripts can send an API key holding it:
CMESH_TOKEN=<secret> cmesh metrics ...`

var metricsCommands = []*command{
	{
		name:    "summary",
		summary: "total the metrics of campaigns over a time range",
		details: `One row per campaign (per campaign and variant with -by-variant), in the order given, and
a TOTAL row in which each user counts once. The range defaults to the 7 days before -to
(default now). Money is in currency units, one amount per currency; COST/CONV is shown
when the spend is in one currency and there are conversions.

` + rangeDetails + "\n" + hourDetails + "\n\n" + credentialDetails,
		run: runMetricsSummary,
	},
	{
		name:    "series",
		summary: "bucket a campaign's metrics (or all events') by minute, hour or day",
		details: `Buckets are aligned in the -tz time zone and labelled in it; empty buckets are shown.
Without -since or -from the range is the last hour (minute), 24 hours (hour) or 7 days
(day). Ranges reach at most 1 day (minute), 31 days (hour) or 400 days (day).

` + rangeDetails + "\n\n" + credentialDetails,
		run: runMetricsSeries,
	},
	{
		name:    "breakdown",
		summary: "list the top values of a dimension by a metric",
		details: `-by property groups by the value of the property -property names, e.g. country. Rows
come highest -metric first; VALUE (none) stands for events without a value. The range
defaults to the 7 days before -to (default now).

` + rangeDetails + "\n" + hourDetails + "\n\n" + credentialDetails,
		run: runMetricsBreakdown,
	},
	{
		name:    "funnel",
		summary: "count the users who did a sequence of events in order",
		details: `Give 2 to 10 -step flags in order; -step name@campaign counts only that campaign's events
of that name. The first step must happen within the range (default: the 7 days before
-to, default now), the last within -window of the first.

` + rangeDetails + "\n\n" + credentialDetails,
		run: runMetricsFunnel,
	},
	{
		name:    "live",
		summary: "print a campaign's counters as they change, until Ctrl-C",
		details: `Prints a line per push (every -interval) with the counters since -since (default:
midnight UTC today); with -o json, one JSON object per line. The server ends a stream
after an hour; cmesh then reconnects.

` + credentialDetails,
		run: runMetricsLive,
	},
}

// analytics returns the AnalyticsService client on the gateway connection, and ctx with the
// caller's access token, renewed first if needed.
func (a *app) analytics(ctx context.Context) (context.Context, analyticsv1.AnalyticsServiceClient, error) {
	return serviceClient(ctx, a, analyticsv1.NewAnalyticsServiceClient)
}

// callAnalytics makes one AnalyticsService call within -timeout and prints its result.
func callAnalytics[M proto.Message](ctx context.Context, a *app, table func(io.Writer, M) error, call func(context.Context, analyticsv1.AnalyticsServiceClient) (M, error)) error {
	return callService(ctx, a, analyticsv1.NewAnalyticsServiceClient, table, call)
}

// ---- time flags ----

// parseAgo parses a positive duration: Go's syntax (90m, 1h30m) extended with days and
// weeks (7d, 2w, 1d12h), which lead.
func parseAgo(s string) (time.Duration, error) {
	const maxDays = 100 * 366 // far beyond any range the server accepts, far from overflow
	var d time.Duration
	rest := s
	for {
		i := 0
		for i < len(rest) && '0' <= rest[i] && rest[i] <= '9' {
			i++
		}
		if i == 0 || i == len(rest) || (rest[i] != 'd' && rest[i] != 'w') {
			break
		}
		n, err := strconv.Atoi(rest[:i])
		if err != nil || n > maxDays {
			return 0, fmt.Errorf("%q is too long", s)
		}
		days := n
		if rest[i] == 'w' {
			days *= 7
		}
		d += time.Duration(days) * 24 * time.Hour
		if d > maxDays*24*time.Hour {
			return 0, fmt.Errorf("%q is too long", s)
		}
		rest = rest[i+1:]
	}
	if rest != "" {
		x, err := time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration such as 90m, 24h or 7d", s)
		}
		d += x
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration", s)
	}
	return d, nil
}

// parseTimeArg parses the value of a time flag: an RFC 3339 time or a duration before now.
// With alignHours, a duration of whole hours counts back from the start of now's hour.
func parseTimeArg(name, s string, now time.Time, alignHours bool) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := parseAgo(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("-%s %q: want an RFC 3339 time such as 2026-11-01T00:00:00Z or a duration before now such as 24h or 7d", name, s)
	}
	if alignHours && d%time.Hour == 0 {
		now = now.Truncate(time.Hour)
	}
	return now.Add(-d), nil
}

// rangeFlags are -since, -from and -to. alignHours makes durations of whole hours count
// back from the start of the current hour, for the commands the hourly rollups answer.
type rangeFlags struct {
	since, from, to string
	alignHours      bool
}

func (r *rangeFlags) register(c *cmdline) {
	c.StringVar(&r.since, "since", "", "the range from this `time` (or this long ago: 24h, 7d) until now")
	c.StringVar(&r.from, "from", "", "start of the range, inclusive: RFC 3339 `time` or duration ago")
	c.StringVar(&r.to, "to", "", "end of the range, exclusive: RFC 3339 `time`, duration ago or now (default now)")
}

// resolve returns the range the flags give. A bound it returns nil is left to the server:
// no start means its default range, no end means up to its now, open-ended. An end is sent
// only when -to names a time other than now.
func (r *rangeFlags) resolve(c *cmdline, now time.Time) (start, end *timestamppb.Timestamp, err error) {
	if r.since != "" && (r.from != "" || r.to != "") {
		return nil, nil, c.usageErr("-since and -from/-to are exclusive")
	}
	from, name := r.from, "from"
	if r.since != "" {
		from, name = r.since, "since"
	}
	e := now
	if r.to != "" && r.to != "now" {
		if e, err = parseTimeArg("to", r.to, now, r.alignHours); err != nil {
			return nil, nil, c.usageErr(err.Error())
		}
		end = timestamppb.New(e)
	}
	if from == "" {
		return nil, end, nil
	}
	s, err := parseTimeArg(name, from, now, r.alignHours)
	if err != nil {
		return nil, nil, c.usageErr(err.Error())
	}
	if !s.Before(e) {
		upTo := "now"
		if end != nil {
			upTo = formatTime(e)
		}
		return nil, nil, c.usageErr(fmt.Sprintf("the range is empty: %s is not before %s", formatTime(s), upTo))
	}
	return timestamppb.New(s), end, nil
}

// ---- other flags ----

// campaignsFlag collects -campaign values: the flag repeats, and each value may hold several
// ids separated by commas. Duplicates are dropped, first occurrence first.
type campaignsFlag []string

func (f *campaignsFlag) String() string { return strings.Join(*f, ",") }

func (f *campaignsFlag) Set(v string) error {
	for id := range strings.SplitSeq(v, ",") {
		id = strings.TrimSpace(id)
		if id == "" {
			return errors.New("empty campaign id")
		}
		if !slices.Contains(*f, id) {
			*f = append(*f, id)
		}
	}
	return nil
}

// stepsFlag collects -step values in order: an event name, optionally @campaign.
type stepsFlag []*analyticsv1.FunnelStep

func (f *stepsFlag) String() string {
	var s []string
	for _, st := range *f {
		s = append(s, formatStep(st))
	}
	return strings.Join(s, " ")
}

func (f *stepsFlag) Set(v string) error {
	st, err := parseStep(v)
	if err != nil {
		return err
	}
	*f = append(*f, st)
	return nil
}

// parseStep parses "name" or "name@campaign". The campaign follows the last @, so an event
// name may hold one.
func parseStep(v string) (*analyticsv1.FunnelStep, error) {
	name, campaign := v, ""
	if i := strings.LastIndexByte(v, '@'); i >= 0 {
		name, campaign = v[:i], v[i+1:]
		if campaign == "" {
			return nil, fmt.Errorf("%q: empty campaign after @", v)
		}
	}
	if strings.TrimSpace(name) == "" {
		return nil, fmt.Errorf("%q: empty event name", v)
	}
	return &analyticsv1.FunnelStep{EventName: name, CampaignId: campaign}, nil
}

func formatStep(st *analyticsv1.FunnelStep) string {
	if st.GetCampaignId() == "" {
		return st.GetEventName()
	}
	return st.GetEventName() + "@" + st.GetCampaignId()
}

var granularities = map[string]analyticsv1.Granularity{
	"minute": analyticsv1.Granularity_GRANULARITY_MINUTE,
	"hour":   analyticsv1.Granularity_GRANULARITY_HOUR,
	"day":    analyticsv1.Granularity_GRANULARITY_DAY,
}

// defaultSeriesRange is the range of a series without -since or -from, per granularity.
var defaultSeriesRange = map[analyticsv1.Granularity]time.Duration{
	analyticsv1.Granularity_GRANULARITY_MINUTE: time.Hour,
	analyticsv1.Granularity_GRANULARITY_HOUR:   24 * time.Hour,
	analyticsv1.Granularity_GRANULARITY_DAY:    7 * 24 * time.Hour,
}

var dimensions = map[string]analyticsv1.Dimension{
	"name":     analyticsv1.Dimension_DIMENSION_EVENT_NAME,
	"type":     analyticsv1.Dimension_DIMENSION_EVENT_TYPE,
	"campaign": analyticsv1.Dimension_DIMENSION_CAMPAIGN,
	"variant":  analyticsv1.Dimension_DIMENSION_VARIANT,
	"app":      analyticsv1.Dimension_DIMENSION_APP,
	"device":   analyticsv1.Dimension_DIMENSION_DEVICE,
	"locale":   analyticsv1.Dimension_DIMENSION_LOCALE,
	"property": analyticsv1.Dimension_DIMENSION_PROPERTY,
}

var metricNames = map[string]analyticsv1.Metric{
	"events":           analyticsv1.Metric_METRIC_EVENTS,
	"impressions":      analyticsv1.Metric_METRIC_IMPRESSIONS,
	"clicks":           analyticsv1.Metric_METRIC_CLICKS,
	"conversions":      analyticsv1.Metric_METRIC_CONVERSIONS,
	"conversion_value": analyticsv1.Metric_METRIC_CONVERSION_VALUE,
	"unique_users":     analyticsv1.Metric_METRIC_UNIQUE_USERS,
	"spend":            analyticsv1.Metric_METRIC_SPEND,
}

// lookupName finds s (in any case, - for _) in names, or says which names there are.
func lookupName[V any](flagName, s string, names map[string]V) (V, error) {
	if v, ok := names[strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "-", "_")]; ok {
		return v, nil
	}
	keys := make([]string, 0, len(names))
	for k := range names {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var zero V
	return zero, fmt.Errorf("-%s %q: want one of %s", flagName, s, strings.Join(keys, ", "))
}

// loadZone loads an IANA time zone; "Local" is refused, since the server cannot know it.
func loadZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("-tz %q: want an IANA time zone such as UTC or Europe/Berlin", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("-tz %q: unknown time zone; want an IANA name such as UTC or Europe/Berlin", name)
	}
	return loc, nil
}

// wholeSeconds checks that d, the value of flag name, is whole seconds in [min, max].
func wholeSeconds(name string, d, min, max time.Duration) error {
	if d < min || d > max || d%time.Second != 0 {
		return fmt.Errorf("-%s %s: want whole seconds from %s to %s", name, shortDuration(d), shortDuration(min), shortDuration(max))
	}
	return nil
}

// shortDuration shows d without the zero units Go's String adds: 24h rather than 24h0m0s.
func shortDuration(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// ---- commands ----

func runMetricsSummary(ctx context.Context, a *app, c *cmdline) error {
	var (
		campaigns campaignsFlag
		r         rangeFlags
		byVariant bool
		raw       bool
		exact     bool
	)
	c.Var(&campaigns, "campaign", "campaign `id`; repeat the flag or separate with commas, 1-100 (required)")
	r.alignHours = true
	r.register(c)
	c.BoolVar(&byVariant, "by-variant", false, "one row per campaign and variant")
	c.BoolVar(&raw, "raw", false, "read the raw events, not the hourly rollups")
	c.BoolVar(&exact, "exact-users", false, "count unique users exactly (slower; by default an estimate, see docs/api.md)")
	if _, err := c.parse(a); err != nil {
		return err
	}
	switch {
	case len(campaigns) == 0:
		return c.usageErr("-campaign is required")
	case len(campaigns) > 100:
		return c.usageErr(fmt.Sprintf("%d campaigns: at most 100", len(campaigns)))
	}
	req := &analyticsv1.GetCampaignSummaryRequest{CampaignIds: campaigns, ByVariant: byVariant, ExactUniqueUsers: exact}
	var err error
	if req.StartTime, req.EndTime, err = r.resolve(c, a.now()); err != nil {
		return err
	}
	if raw {
		req.Source = analyticsv1.DataSource_DATA_SOURCE_RAW
	}
	return callAnalytics(ctx, a, writeSummary, func(ctx context.Context, client analyticsv1.AnalyticsServiceClient) (*analyticsv1.GetCampaignSummaryResponse, error) {
		return client.GetCampaignSummary(ctx, req)
	})
}

func runMetricsSeries(ctx context.Context, a *app, c *cmdline) error {
	var (
		campaign    string
		granularity string
		tz          string
		r           rangeFlags
		raw         bool
		exact       bool
	)
	c.StringVar(&campaign, "campaign", "", "campaign `id` (default: all your tenant's events)")
	c.StringVar(&granularity, "granularity", "", "bucket `size`: minute, hour or day (required)")
	c.StringVar(&tz, "tz", "UTC", "IANA time `zone` that aligns and labels the buckets, e.g. Europe/Berlin")
	r.register(c)
	c.BoolVar(&raw, "raw", false, "read the raw events, not the hourly rollups")
	c.BoolVar(&exact, "exact-users", false, "count unique users exactly (slower; by default an estimate, see docs/api.md)")
	if _, err := c.parse(a); err != nil {
		return err
	}
	if granularity == "" {
		return c.usageErr("-granularity is required: minute, hour or day")
	}
	g, err := lookupName("granularity", granularity, granularities)
	if err != nil {
		return c.usageErr(err.Error())
	}
	loc, err := loadZone(tz)
	if err != nil {
		return c.usageErr(err.Error())
	}
	req := &analyticsv1.GetMetricSeriesRequest{CampaignId: campaign, Granularity: g, TimeZone: tz, ExactUniqueUsers: exact}
	if req.StartTime, req.EndTime, err = r.resolve(c, a.now()); err != nil {
		return err
	}
	if req.StartTime == nil {
		// The server's default range (7 days) is too long for minute buckets: take one the
		// granularity allows. The server aligns the start down to its bucket.
		end := a.now()
		if req.EndTime != nil {
			end = req.EndTime.AsTime()
		}
		req.StartTime = timestamppb.New(end.Add(-defaultSeriesRange[g]))
	}
	if raw {
		req.Source = analyticsv1.DataSource_DATA_SOURCE_RAW
	}
	return callAnalytics(ctx, a, func(w io.Writer, resp *analyticsv1.GetMetricSeriesResponse) error {
		return writeSeries(w, resp, loc)
	}, func(ctx context.Context, client analyticsv1.AnalyticsServiceClient) (*analyticsv1.GetMetricSeriesResponse, error) {
		return client.GetMetricSeries(ctx, req)
	})
}

func runMetricsBreakdown(ctx context.Context, a *app, c *cmdline) error {
	var (
		by, property, metric, campaign string
		limit                          int
		r                              rangeFlags
		raw, exact                     bool
	)
	c.StringVar(&by, "by", "", "`dimension`: name, type, campaign, variant, app, device, locale or property (required)")
	c.StringVar(&property, "property", "", "property `key` to group by, with -by property, e.g. country")
	c.StringVar(&metric, "metric", "events", "order by this `metric`: events, impressions, clicks, conversions, conversion_value, unique_users or spend")
	c.IntVar(&limit, "limit", 10, "show the top `n` values, 1-1000")
	c.StringVar(&campaign, "campaign", "", "campaign `id` (default: all your tenant's events)")
	c.BoolVar(&raw, "raw", false, "read the raw events, not the hourly rollups")
	c.BoolVar(&exact, "exact-users", false, "count unique users exactly (slower; by default an estimate, see docs/api.md)")
	r.alignHours = true
	r.register(c)
	if _, err := c.parse(a); err != nil {
		return err
	}
	if by == "" {
		return c.usageErr("-by is required: name, type, campaign, variant, app, device, locale or property")
	}
	dim, err := lookupName("by", by, dimensions)
	if err != nil {
		return c.usageErr(err.Error())
	}
	switch {
	case dim == analyticsv1.Dimension_DIMENSION_PROPERTY && property == "":
		return c.usageErr("-by property needs -property, e.g. -property country")
	case dim != analyticsv1.Dimension_DIMENSION_PROPERTY && property != "":
		return c.usageErr("-property goes with -by property")
	case limit < 1 || limit > 1000:
		return c.usageErr(fmt.Sprintf("-limit %d: want 1 to 1000", limit))
	}
	m, err := lookupName("metric", metric, metricNames)
	if err != nil {
		return c.usageErr(err.Error())
	}
	req := &analyticsv1.GetBreakdownRequest{
		CampaignId: campaign, Dimension: dim, PropertyKey: property, Metric: m, Limit: int32(limit), ExactUniqueUsers: exact,
	}
	if req.StartTime, req.EndTime, err = r.resolve(c, a.now()); err != nil {
		return err
	}
	if raw {
		req.Source = analyticsv1.DataSource_DATA_SOURCE_RAW
	}
	return callAnalytics(ctx, a, writeBreakdown, func(ctx context.Context, client analyticsv1.AnalyticsServiceClient) (*analyticsv1.GetBreakdownResponse, error) {
		return client.GetBreakdown(ctx, req)
	})
}

// maxFunnelWindow is the longest conversion window the API accepts.
const maxFunnelWindow = 90 * 24 * time.Hour

func runMetricsFunnel(ctx context.Context, a *app, c *cmdline) error {
	var (
		steps  stepsFlag
		window string
		r      rangeFlags
	)
	c.Var(&steps, "step", "a step: event `name`, or name@campaign for that campaign's events only; repeat in order, 2-10 (required)")
	c.StringVar(&window, "window", "", "longest `duration` from the first step to the last, 1s to 90d, e.g. 30m, 24h, 7d (default 24h)")
	r.register(c)
	if _, err := c.parse(a); err != nil {
		return err
	}
	if len(steps) < 2 || len(steps) > 10 {
		return c.usageErr(fmt.Sprintf("%d -step flag(s): want 2 to 10", len(steps)))
	}
	req := &analyticsv1.GetFunnelRequest{Steps: steps}
	if window != "" {
		d, err := parseAgo(window)
		if err != nil {
			return c.usageErr("-window " + err.Error())
		}
		if err := wholeSeconds("window", d, time.Second, maxFunnelWindow); err != nil {
			return c.usageErr(err.Error())
		}
		req.WindowSeconds = int64(d / time.Second)
	}
	var err error
	if req.StartTime, req.EndTime, err = r.resolve(c, a.now()); err != nil {
		return err
	}
	return callAnalytics(ctx, a, writeFunnel, func(ctx context.Context, client analyticsv1.AnalyticsServiceClient) (*analyticsv1.GetFunnelResponse, error) {
		return client.GetFunnel(ctx, req)
	})
}

func runMetricsLive(ctx context.Context, a *app, c *cmdline) error {
	var (
		campaign string
		interval time.Duration
		since    string
		exact    bool
	)
	c.StringVar(&campaign, "campaign", "", "campaign `id` (required)")
	c.DurationVar(&interval, "interval", 5*time.Second, "`time` between pushes, whole seconds from 1s to 60s")
	c.StringVar(&since, "since", "", "count events from this `time` (or this long ago: 30m, 2h) (default: midnight UTC today)")
	c.BoolVar(&exact, "exact-users", false, "count unique users exactly (slower; by default an estimate, see docs/api.md)")
	if _, err := c.parse(a); err != nil {
		return err
	}
	if campaign == "" {
		return c.usageErr("-campaign is required")
	}
	if err := wholeSeconds("interval", interval, time.Second, time.Minute); err != nil {
		return c.usageErr(err.Error())
	}
	req := &analyticsv1.WatchCampaignMetricsRequest{CampaignId: campaign, IntervalSeconds: int32(interval / time.Second), ExactUniqueUsers: exact}
	if since != "" {
		t, err := parseTimeArg("since", since, a.now(), false)
		if err != nil {
			return c.usageErr(err.Error())
		}
		req.StartTime = timestamppb.New(t)
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	if a.output != "json" {
		if _, err := fmt.Fprintf(a.stdout, liveFormat, "TIME", "IMPRESSIONS", "CLICKS", "CONVERSIONS", "USERS"); err != nil {
			return err
		}
	}
	for {
		pushes, err := a.watch(ctx, req)
		if ctx.Err() != nil {
			return nil // Ctrl-C
		}
		if err != nil {
			return err
		}
		if pushes == 0 {
			return errors.New("live: the server ended the stream without a push")
		}
		// The server ends a stream after an hour: open the next one. Reconnecting renews
		// the access token if it has expired meanwhile.
	}
}

// watch opens one WatchCampaignMetrics stream and prints its pushes until it ends, and
// returns how many it printed. A stream the server ends is no error.
func (a *app) watch(ctx context.Context, req *analyticsv1.WatchCampaignMetricsRequest) (int, error) {
	ctx, client, err := a.analytics(ctx)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.WatchCampaignMetrics(ctx, req)
	if err != nil {
		return 0, err
	}
	for n := 0; ; n++ {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if err := a.writeLive(resp); err != nil {
			return n, err
		}
	}
}

// liveFormat lays out a line of metrics live; the columns fit counts up to 11 digits.
const liveFormat = "%-20s  %-11v  %-11v  %-11v  %v\n"

// writeLive prints one push: a line of the table, or one JSON object on a line.
func (a *app) writeLive(resp *analyticsv1.WatchCampaignMetricsResponse) error {
	if a.output == "json" {
		b, err := protojson.Marshal(resp)
		if err != nil {
			return fmt.Errorf("encode %s: %w", resp.ProtoReflect().Descriptor().Name(), err)
		}
		_, err = a.stdout.Write(append(b, '\n'))
		return err
	}
	m := resp.GetMetrics()
	_, err := fmt.Fprintf(a.stdout, liveFormat, formatTimestamp(resp.GetTime()),
		m.GetImpressions(), m.GetClicks(), m.GetConversions(), m.GetUniqueUsers())
	return err
}

// ---- tables ----

// metricsHeader and metricsCells are the metric columns summary and breakdown share.
var metricsHeader = []string{"IMPRESSIONS", "CLICKS", "CONVERSIONS", "CTR", "CVR", "CONV.VALUE", "SPEND", "COST/CONV", "USERS"}

func metricsCells(m *analyticsv1.Metrics) []string {
	costPerConversion := "-"
	if m.GetCostPerConversion() != nil {
		costPerConversion = formatMoney(m.GetCostPerConversion())
	}
	return []string{
		formatCount(m.GetImpressions()), formatCount(m.GetClicks()), formatCount(m.GetConversions()),
		formatPercent(m.GetCtr()), formatPercent(m.GetCvr()),
		formatMoneys(m.GetConversionValue()), formatMoneys(m.GetSpend()), costPerConversion,
		formatCount(m.GetUniqueUsers()),
	}
}

func writeSummary(w io.Writer, resp *analyticsv1.GetCampaignSummaryResponse) error {
	t := newTable(w, append([]string{"CAMPAIGN", "VARIANT"}, metricsHeader...)...)
	for _, r := range resp.GetCampaigns() {
		variant := r.GetVariant()
		if variant == "" {
			variant = "-"
		}
		t.row(append([]string{r.GetCampaignId(), variant}, metricsCells(r.GetMetrics())...)...)
	}
	if resp.GetTotal() != nil {
		t.row(append([]string{"TOTAL", ""}, metricsCells(resp.GetTotal())...)...)
	}
	return t.flush()
}

// writeSeries labels each bucket with its start in loc, the zone the buckets are aligned in.
func writeSeries(w io.Writer, resp *analyticsv1.GetMetricSeriesResponse, loc *time.Location) error {
	t := newTable(w, "BUCKET", "IMPRESSIONS", "CLICKS", "CONVERSIONS", "USERS", "EVENTS")
	for _, b := range resp.GetBuckets() {
		label := "-"
		if b.GetStartTime() != nil {
			label = b.GetStartTime().AsTime().In(loc).Format(time.RFC3339)
		}
		m := b.GetMetrics()
		t.row(label, formatCount(m.GetImpressions()), formatCount(m.GetClicks()), formatCount(m.GetConversions()),
			formatCount(m.GetUniqueUsers()), formatCount(m.GetEvents()))
	}
	return t.flush()
}

func writeBreakdown(w io.Writer, resp *analyticsv1.GetBreakdownResponse) error {
	t := newTable(w, append([]string{"VALUE", "EVENTS"}, metricsHeader...)...)
	for _, r := range resp.GetRows() {
		value := cell(r.GetValue())
		if value == "" {
			value = "(none)"
		}
		t.row(append([]string{value, formatCount(r.GetMetrics().GetEvents())}, metricsCells(r.GetMetrics())...)...)
	}
	return t.flush()
}

func writeFunnel(w io.Writer, resp *analyticsv1.GetFunnelResponse) error {
	t := newTable(w, "STEP", "USERS", "FROM START", "FROM PREVIOUS")
	for i, s := range resp.GetSteps() {
		previous := "-"
		if i > 0 {
			previous = formatPercent(s.GetConversionFromPrevious())
		}
		t.row(fmt.Sprintf("%d %s", i+1, formatStep(s.GetStep())), formatCount(s.GetUsers()),
			formatPercent(s.GetConversionFromStart()), previous)
	}
	return t.flush()
}

func formatCount(n int64) string { return strconv.FormatInt(n, 10) }

// formatPercent shows a ratio as a percentage with two decimals: 0.0523 is "5.23%".
func formatPercent(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "-"
	}
	return strconv.FormatFloat(r*100, 'f', 2, 64) + "%"
}

// formatMoney shows an amount in currency units: 12500000 USD micros is "12.50 USD". It
// keeps at least two decimals and every non-zero one (at most six).
func formatMoney(m *analyticsv1.Money) string {
	micros := m.GetAmountMicros()
	sign := ""
	// Split without negating: -MinInt64 does not exist.
	units, frac := micros/1_000_000, micros%1_000_000
	if micros < 0 {
		sign, units, frac = "-", -units, -frac
	}
	decimals := strings.TrimRight(fmt.Sprintf("%06d", frac), "0")
	for len(decimals) < 2 {
		decimals += "0"
	}
	s := fmt.Sprintf("%s%d.%s", sign, units, decimals)
	if cur := cell(m.GetCurrency()); cur != "" {
		s += " " + cur
	}
	return s
}

// formatMoneys shows amounts in several currencies separated by commas, or "-" for none.
func formatMoneys(ms []*analyticsv1.Money) string {
	if len(ms) == 0 {
		return "-"
	}
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = formatMoney(m)
	}
	return strings.Join(s, ", ")
}
