package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

// fakeAnalytics is an AnalyticsService server standing in for the gateway; the CLI reaches
// it through a real gRPC connection, as it reaches the gateway. Calls it does not implement
// answer Unimplemented.
type fakeAnalytics struct {
	analyticsv1.UnimplementedAnalyticsServiceServer
	t         *testing.T
	summary   func(*analyticsv1.GetCampaignSummaryRequest) (*analyticsv1.GetCampaignSummaryResponse, error)
	series    func(*analyticsv1.GetMetricSeriesRequest) (*analyticsv1.GetMetricSeriesResponse, error)
	breakdown func(*analyticsv1.GetBreakdownRequest) (*analyticsv1.GetBreakdownResponse, error)
	funnel    func(*analyticsv1.GetFunnelRequest) (*analyticsv1.GetFunnelResponse, error)
	watch     func(*analyticsv1.WatchCampaignMetricsRequest, grpc.ServerStreamingServer[analyticsv1.WatchCampaignMetricsResponse]) error
}

// checkToken fails the test unless the call carried the stored access token.
func (f *fakeAnalytics) checkToken(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer stored-token" {
		f.t.Errorf("authorization = %q, want [Bearer stored-token]", got)
	}
}

func (f *fakeAnalytics) GetCampaignSummary(ctx context.Context, req *analyticsv1.GetCampaignSummaryRequest) (*analyticsv1.GetCampaignSummaryResponse, error) {
	f.checkToken(ctx)
	return f.summary(req)
}

func (f *fakeAnalytics) GetMetricSeries(ctx context.Context, req *analyticsv1.GetMetricSeriesRequest) (*analyticsv1.GetMetricSeriesResponse, error) {
	f.checkToken(ctx)
	return f.series(req)
}

func (f *fakeAnalytics) GetBreakdown(ctx context.Context, req *analyticsv1.GetBreakdownRequest) (*analyticsv1.GetBreakdownResponse, error) {
	f.checkToken(ctx)
	return f.breakdown(req)
}

func (f *fakeAnalytics) GetFunnel(ctx context.Context, req *analyticsv1.GetFunnelRequest) (*analyticsv1.GetFunnelResponse, error) {
	f.checkToken(ctx)
	return f.funnel(req)
}

func (f *fakeAnalytics) WatchCampaignMetrics(req *analyticsv1.WatchCampaignMetricsRequest, s grpc.ServerStreamingServer[analyticsv1.WatchCampaignMetricsResponse]) error {
	f.checkToken(s.Context())
	return f.watch(req, s)
}

// newMetricsCLI returns a CLI logged in to a gateway that serves srv over an in-memory
// connection.
func newMetricsCLI(t *testing.T, srv *fakeAnalytics) *testCLI {
	t.Helper()
	srv.t = t
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	analyticsv1.RegisterAnalyticsServiceServer(s, srv)
	go s.Serve(lis)
	t.Cleanup(s.Stop)

	c := newTestCLI(t, loggedIn(t, fresh), nil)
	c.dial = func(*app) (authv1.AuthServiceClient, io.Closer, error) {
		c.dials++
		conn, err := grpc.NewClient("passthrough:///gateway",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		return authv1.NewAuthServiceClient(conn), conn, nil
	}
	return c
}

func TestParseAgo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"24h", 24 * time.Hour},
		{"90m", 90 * time.Minute},
		{"7d", 7 * 24 * time.Hour},
		{"2w", 14 * 24 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{"1w1d30m", 8*24*time.Hour + 30*time.Minute},
		{"1.5h", 90 * time.Minute},
	}
	for _, tt := range tests {
		if got, err := parseAgo(tt.in); err != nil || got != tt.want {
			t.Errorf("parseAgo(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "0s", "0d", "-1h", "7", "d", "7days", "1h2d", "99999999d", "36601d", "2026-01-01"} {
		if got, err := parseAgo(bad); err == nil {
			t.Errorf("parseAgo(%q) = %v, want an error", bad, got)
		}
	}
}

func TestParseStep(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want *analyticsv1.FunnelStep
	}{
		{"signup", &analyticsv1.FunnelStep{EventName: "signup"}},
		{"purchase@c1", &analyticsv1.FunnelStep{EventName: "purchase", CampaignId: "c1"}},
		{"mail@home@c1", &analyticsv1.FunnelStep{EventName: "mail@home", CampaignId: "c1"}},
	}
	for _, tt := range tests {
		got, err := parseStep(tt.in)
		if err != nil || !proto.Equal(got, tt.want) {
			t.Errorf("parseStep(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		if s := formatStep(got); s != tt.in {
			t.Errorf("formatStep(parseStep(%q)) = %q", tt.in, s)
		}
	}
	for _, bad := range []string{"", " ", "@c1", "signup@"} {
		if got, err := parseStep(bad); err == nil {
			t.Errorf("parseStep(%q) = %v, want an error", bad, got)
		}
	}
}

// TestMetricsRequests checks the request each command line sends, at a time 34m5s past the
// hour: a range without -to stays open-ended (the server's now), and summary and breakdown
// count whole hours back from the start of the hour.
func TestMetricsRequests(t *testing.T) {
	t.Parallel()
	now := testNow.Add(34*time.Minute + 5*time.Second)
	ts := timestamppb.New
	ago := func(d time.Duration) *timestamppb.Timestamp { return ts(now.Add(-d)) }
	hoursAgo := func(d time.Duration) *timestamppb.Timestamp { return ts(testNow.Add(-d)) } // testNow is on the hour
	day := 24 * time.Hour
	nov1, nov8 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 8, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		args []string
		want proto.Message
	}{
		{
			name: "summary defaults to the server's range",
			args: []string{"summary", "-campaign", "c1"},
			want: &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{"c1"}},
		},
		{
			name: "summary since 7d: from the start of the hour, open-ended",
			args: []string{"summary", "-campaign", "c1", "-since", "7d"},
			want: &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{"c1"}, StartTime: hoursAgo(7 * day)},
		},
		{
			name: "summary since 90m: not whole hours, exact",
			args: []string{"summary", "-campaign", "c1", "-since", "90m"},
			want: &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{"c1"}, StartTime: ago(90 * time.Minute)},
		},
		{
			name: "summary campaigns repeated and by commas, variants, raw",
			args: []string{"summary", "-campaign", "c1", "-campaign", "c2,c3", "-campaign", "c1", "-by-variant", "-raw", "-since", "2026-11-01T00:00:00Z"},
			want: &analyticsv1.GetCampaignSummaryRequest{
				CampaignIds: []string{"c1", "c2", "c3"}, ByVariant: true, Source: analyticsv1.DataSource_DATA_SOURCE_RAW, StartTime: ts(nov1),
			},
		},
		{
			name: "summary with exact unique users",
			args: []string{"summary", "-campaign", "c1", "-exact-users"},
			want: &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{"c1"}, ExactUniqueUsers: true},
		},
		{
			name: "summary from and to",
			args: []string{"summary", "-campaign", "c1", "-from", "2026-11-01T00:00:00Z", "-to", "2026-11-08T01:00:00+01:00"},
			want: &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{"c1"}, StartTime: ts(nov1), EndTime: ts(nov8)},
		},
		{
			name: "summary relative from and to",
			args: []string{"summary", "-campaign", "c1", "-from", "48h", "-to", "1d"},
			want: &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{"c1"}, StartTime: hoursAgo(2 * day), EndTime: hoursAgo(day)},
		},
		{
			name: "summary to now is open-ended",
			args: []string{"summary", "-campaign", "c1", "-from", "2026-11-01T00:00:00Z", "-to", "now"},
			want: &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{"c1"}, StartTime: ts(nov1)},
		},
		{
			name: "summary to alone leaves the start to the server",
			args: []string{"summary", "-campaign", "c1", "-to", "2026-11-08T00:00:00Z"},
			want: &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{"c1"}, EndTime: ts(nov8)},
		},
		{
			name: "series hour in Berlin, default range",
			args: []string{"series", "-campaign", "c1", "-granularity", "hour", "-tz", "Europe/Berlin"},
			want: &analyticsv1.GetMetricSeriesRequest{
				CampaignId: "c1", Granularity: analyticsv1.Granularity_GRANULARITY_HOUR, TimeZone: "Europe/Berlin", StartTime: ago(day),
			},
		},
		{
			name: "series with exact unique users",
			args: []string{"series", "-granularity", "MINUTE", "-exact-users"},
			want: &analyticsv1.GetMetricSeriesRequest{Granularity: analyticsv1.Granularity_GRANULARITY_MINUTE, TimeZone: "UTC", StartTime: ago(time.Hour), ExactUniqueUsers: true},
		},
		{
			name: "series minute default range",
			args: []string{"series", "-granularity", "MINUTE"},
			want: &analyticsv1.GetMetricSeriesRequest{Granularity: analyticsv1.Granularity_GRANULARITY_MINUTE, TimeZone: "UTC", StartTime: ago(time.Hour)},
		},
		{
			name: "series day default range before -to",
			args: []string{"series", "-granularity", "day", "-to", "2026-11-08T00:00:00Z"},
			want: &analyticsv1.GetMetricSeriesRequest{
				Granularity: analyticsv1.Granularity_GRANULARITY_DAY, TimeZone: "UTC", StartTime: ts(nov1), EndTime: ts(nov8),
			},
		},
		{
			name: "series since, raw: the server aligns to the bucket",
			args: []string{"series", "-granularity", "day", "-since", "30d", "-raw"},
			want: &analyticsv1.GetMetricSeriesRequest{
				Granularity: analyticsv1.Granularity_GRANULARITY_DAY, TimeZone: "UTC", StartTime: ago(30 * day),
				Source: analyticsv1.DataSource_DATA_SOURCE_RAW,
			},
		},
		{
			name: "breakdown defaults",
			args: []string{"breakdown", "-by", "name"},
			want: &analyticsv1.GetBreakdownRequest{Dimension: analyticsv1.Dimension_DIMENSION_EVENT_NAME, Metric: analyticsv1.Metric_METRIC_EVENTS, Limit: 10},
		},
		{
			name: "breakdown by property",
			args: []string{"breakdown", "-by", "property", "-property", "country", "-metric", "conversion-value", "-limit", "5", "-campaign", "c1", "-since", "24h"},
			want: &analyticsv1.GetBreakdownRequest{
				CampaignId: "c1", Dimension: analyticsv1.Dimension_DIMENSION_PROPERTY, PropertyKey: "country",
				Metric: analyticsv1.Metric_METRIC_CONVERSION_VALUE, Limit: 5, StartTime: hoursAgo(day),
			},
		},
		{
			name: "breakdown raw",
			args: []string{"breakdown", "-by", "variant", "-raw"},
			want: &analyticsv1.GetBreakdownRequest{Dimension: analyticsv1.Dimension_DIMENSION_VARIANT, Metric: analyticsv1.Metric_METRIC_EVENTS,
				Limit: 10, Source: analyticsv1.DataSource_DATA_SOURCE_RAW},
		},
		{
			name: "breakdown by unique users, exact",
			args: []string{"breakdown", "-by", "variant", "-metric", "unique_users", "-exact-users"},
			want: &analyticsv1.GetBreakdownRequest{Dimension: analyticsv1.Dimension_DIMENSION_VARIANT, Metric: analyticsv1.Metric_METRIC_UNIQUE_USERS,
				Limit: 10, ExactUniqueUsers: true},
		},
		{
			name: "funnel steps in order",
			args: []string{"funnel", "-step", "signup", "-step", "purchase@c1", "-window", "7d", "-since", "30d"},
			want: &analyticsv1.GetFunnelRequest{
				Steps:         []*analyticsv1.FunnelStep{{EventName: "signup"}, {EventName: "purchase", CampaignId: "c1"}},
				WindowSeconds: 7 * 86400, StartTime: ago(30 * day),
			},
		},
		{
			name: "funnel default window",
			args: []string{"funnel", "-step", "a", "-step", "b", "-step", "c"},
			want: &analyticsv1.GetFunnelRequest{Steps: []*analyticsv1.FunnelStep{{EventName: "a"}, {EventName: "b"}, {EventName: "c"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got proto.Message
			srv := &fakeAnalytics{
				summary: func(req *analyticsv1.GetCampaignSummaryRequest) (*analyticsv1.GetCampaignSummaryResponse, error) {
					got = req
					return &analyticsv1.GetCampaignSummaryResponse{}, nil
				},
				series: func(req *analyticsv1.GetMetricSeriesRequest) (*analyticsv1.GetMetricSeriesResponse, error) {
					got = req
					return &analyticsv1.GetMetricSeriesResponse{}, nil
				},
				breakdown: func(req *analyticsv1.GetBreakdownRequest) (*analyticsv1.GetBreakdownResponse, error) {
					got = req
					return &analyticsv1.GetBreakdownResponse{}, nil
				},
				funnel: func(req *analyticsv1.GetFunnelRequest) (*analyticsv1.GetFunnelResponse, error) {
					got = req
					return &analyticsv1.GetFunnelResponse{}, nil
				},
			}
			c := newMetricsCLI(t, srv)
			c.now = func() time.Time { return now }
			if code := c.run(t.Context(), append([]string{"metrics"}, tt.args...)); code != 0 {
				t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
			}
			if !proto.Equal(got, tt.want) {
				t.Errorf("request = %v\nwant      %v", got, tt.want)
			}
		})
	}
}

func TestMetricsUsageErrors(t *testing.T) {
	t.Parallel()
	many := make([]string, 0, 202)
	for i := range 101 {
		many = append(many, "-campaign", "c"+string(rune('a'+i%26))+strings.Repeat("x", i/26))
	}
	tests := []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{"summary without campaign", []string{"summary"}, "-campaign is required"},
		{"summary empty campaign", []string{"summary", "-campaign", "c1,"}, "empty campaign id"},
		{"summary 101 campaigns", append([]string{"summary"}, many...), "101 campaigns: at most 100"},
		{"since and from", []string{"summary", "-campaign", "c1", "-since", "7d", "-from", "2026-11-01T00:00:00Z"}, "-since and -from/-to are exclusive"},
		{"since and to", []string{"summary", "-campaign", "c1", "-since", "7d", "-to", "now"}, "-since and -from/-to are exclusive"},
		{"bad since", []string{"summary", "-campaign", "c1", "-since", "a week"}, `-since "a week": want an RFC 3339 time`},
		{"since zero", []string{"summary", "-campaign", "c1", "-since", "0h"}, `-since "0h"`},
		{"bad to", []string{"summary", "-campaign", "c1", "-to", "tomorrow"}, `-to "tomorrow"`},
		{"empty range", []string{"summary", "-campaign", "c1", "-from", "2026-11-08T00:00:00Z", "-to", "2026-11-01T00:00:00Z"}, "the range is empty: 2026-11-08T00:00:00Z is not before 2026-11-01T00:00:00Z"},
		{"from in the future", []string{"summary", "-campaign", "c1", "-from", "2030-01-01T00:00:00Z"}, "the range is empty: 2030-01-01T00:00:00Z is not before now"},
		{"unexpected argument", []string{"summary", "-campaign", "c1", "extra"}, `metrics summary: unexpected argument "extra"`},
		{"unknown flag", []string{"summary", "-campaign", "c1", "-bogus"}, "flag provided but not defined: -bogus"},
		{"series without granularity", []string{"series"}, "-granularity is required"},
		{"series bad granularity", []string{"series", "-granularity", "week"}, `-granularity "week": want one of day, hour, minute`},
		{"series bad zone", []string{"series", "-granularity", "hour", "-tz", "Mars/Olympus"}, `-tz "Mars/Olympus": unknown time zone`},
		{"series local zone", []string{"series", "-granularity", "hour", "-tz", "Local"}, `-tz "Local": want an IANA time zone`},
		{"breakdown without by", []string{"breakdown"}, "-by is required"},
		{"breakdown bad by", []string{"breakdown", "-by", "country"}, `-by "country": want one of app, campaign, device, locale, name, property, type, variant`},
		{"breakdown property without key", []string{"breakdown", "-by", "property"}, "-by property needs -property"},
		{"breakdown key without property", []string{"breakdown", "-by", "app", "-property", "country"}, "-property goes with -by property"},
		{"breakdown bad metric", []string{"breakdown", "-by", "app", "-metric", "revenue"}, `-metric "revenue": want one of clicks, conversion_value`},
		{"breakdown limit 0", []string{"breakdown", "-by", "app", "-limit", "0"}, "-limit 0: want 1 to 1000"},
		{"breakdown limit too big", []string{"breakdown", "-by", "app", "-limit", "1001"}, "-limit 1001: want 1 to 1000"},
		{"funnel one step", []string{"funnel", "-step", "signup"}, "1 -step flag(s): want 2 to 10"},
		{"funnel eleven steps", append([]string{"funnel"}, strings.Split(strings.Repeat("-step s ", 11), " ")[:22]...), "11 -step flag(s): want 2 to 10"},
		{"funnel empty campaign", []string{"funnel", "-step", "signup@", "-step", "b"}, `"signup@": empty campaign after @`},
		{"funnel empty name", []string{"funnel", "-step", "@c1", "-step", "b"}, `"@c1": empty event name`},
		{"funnel bad window", []string{"funnel", "-step", "a", "-step", "b", "-window", "soon"}, `-window "soon" is not a duration`},
		{"funnel window too long", []string{"funnel", "-step", "a", "-step", "b", "-window", "91d"}, "-window 91d: want whole seconds from 1s to 90d"},
		{"funnel window fraction", []string{"funnel", "-step", "a", "-step", "b", "-window", "1500ms"}, "-window 1.5s: want whole seconds"},
		{"live without campaign", []string{"live"}, "-campaign is required"},
		{"live interval too short", []string{"live", "-campaign", "c1", "-interval", "500ms"}, "-interval 500ms: want whole seconds from 1s to 1m"},
		{"live interval too long", []string{"live", "-campaign", "c1", "-interval", "2m"}, "-interval 2m: want whole seconds from 1s to 1m"},
		{"live bad since", []string{"live", "-campaign", "c1", "-since", "yesterday"}, `-since "yesterday"`},
		{"missing subcommand", nil, "metrics: missing subcommand"},
		{"unknown subcommand", []string{"report"}, `unknown command "metrics report"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCLI(t, loggedIn(t, fresh), nil) // dialling fails the test
			if code := c.run(t.Context(), append([]string{"metrics"}, tt.args...)); code != 2 {
				t.Errorf("exit code = %d, want 2; stderr:\n%s", code, c.stderr)
			}
			if !strings.Contains(c.stderr.String(), tt.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantStderr, c.stderr)
			}
			if !strings.Contains(c.stderr.String(), "usage: cmesh [global flags] metrics") {
				t.Errorf("stderr has no metrics usage:\n%s", c.stderr)
			}
			if c.stdout.Len() != 0 {
				t.Errorf("stdout = %q, want nothing", c.stdout)
			}
		})
	}
}

var testSummary = &analyticsv1.GetCampaignSummaryResponse{
	Campaigns: []*analyticsv1.CampaignMetrics{
		{CampaignId: "spring-sale", Variant: "A", Metrics: &analyticsv1.Metrics{
			Impressions: 10000, Clicks: 523, Conversions: 41, UniqueUsers: 7200, Events: 10700,
			Ctr: 0.0523, Cvr: 41.0 / 523,
			ConversionValue:   []*analyticsv1.Money{{AmountMicros: 1_234_500_000, Currency: "USD"}},
			Spend:             []*analyticsv1.Money{{AmountMicros: 512_500_000, Currency: "USD"}},
			CostPerConversion: &analyticsv1.Money{AmountMicros: 12_500_000, Currency: "USD"},
		}},
		{CampaignId: "spring-sale", Variant: "B", Metrics: &analyticsv1.Metrics{
			Impressions: 9000, Clicks: 270, Conversions: 0, UniqueUsers: 6100, Events: 9300,
			Ctr: 0.03, Cvr: 0,
			Spend: []*analyticsv1.Money{{AmountMicros: 90_000_000, Currency: "USD"}, {AmountMicros: 1_500, Currency: "EUR"}},
		}},
		{CampaignId: "new\tcampaign", Metrics: &analyticsv1.Metrics{}},
	},
	Total: &analyticsv1.Metrics{
		Impressions: 19000, Clicks: 793, Conversions: 41, UniqueUsers: 12000, Events: 20000,
		Ctr: 793.0 / 19000, Cvr: 41.0 / 793,
		ConversionValue: []*analyticsv1.Money{{AmountMicros: 1_234_500_000, Currency: "USD"}},
		Spend:           []*analyticsv1.Money{{AmountMicros: 602_500_000, Currency: "USD"}, {AmountMicros: 1_500, Currency: "EUR"}},
	},
	Source: analyticsv1.DataSource_DATA_SOURCE_ROLLUP,
}

func TestWriteSummary(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := writeSummary(&b, testSummary); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"CAMPAIGN      VARIANT  IMPRESSIONS  CLICKS  CONVERSIONS  CTR    CVR    CONV.VALUE   SPEND                   COST/CONV  USERS\n" +
		"spring-sale   A        10000        523     41           5.23%  7.84%  1234.50 USD  512.50 USD              12.50 USD  7200\n" +
		"spring-sale   B        9000         270     0            3.00%  0.00%  -            90.00 USD, 0.0015 EUR   -          6100\n" +
		"new campaign  -        0            0       0            0.00%  0.00%  -            -                       -          0\n" +
		"TOTAL                  19000        793     41           4.17%  5.17%  1234.50 USD  602.50 USD, 0.0015 EUR  -          12000\n"
	if b.String() != want {
		t.Errorf("table =\n%s\nwant\n%s", b.String(), want)
	}
}

func TestFormatMoney(t *testing.T) {
	t.Parallel()
	tests := []struct {
		micros   int64
		currency string
		want     string
	}{
		{12_500_000, "USD", "12.50 USD"},
		{0, "USD", "0.00 USD"},
		{3_000_000, "EUR", "3.00 EUR"},
		{1, "USD", "0.000001 USD"},
		{1_234_567, "JPY", "1.234567 JPY"},
		{-2_050_000, "USD", "-2.05 USD"},
		{-1, "USD", "-0.000001 USD"},
		{-9223372036854775808, "USD", "-9223372036854.775808 USD"},
		{9_990_000, "", "9.99"},
	}
	for _, tt := range tests {
		if got := formatMoney(&analyticsv1.Money{AmountMicros: tt.micros, Currency: tt.currency}); got != tt.want {
			t.Errorf("formatMoney(%d %s) = %q, want %q", tt.micros, tt.currency, got, tt.want)
		}
	}
	if got := formatMoneys(nil); got != "-" {
		t.Errorf("formatMoneys(nil) = %q, want -", got)
	}
}

func TestFormatPercent(t *testing.T) {
	t.Parallel()
	for r, want := range map[float64]string{0: "0.00%", 1: "100.00%", 0.0523: "5.23%", 0.12345: "12.35%", 2.0 / 3: "66.67%"} {
		if got := formatPercent(r); got != want {
			t.Errorf("formatPercent(%v) = %q, want %q", r, got, want)
		}
	}
}

// TestWriteSeries labels day buckets in Berlin across the end of summer time (25 Oct 2026).
func TestWriteSeries(t *testing.T) {
	t.Parallel()
	berlin, err := loadZone("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	resp := &analyticsv1.GetMetricSeriesResponse{Buckets: []*analyticsv1.Bucket{
		{StartTime: timestamppb.New(time.Date(2026, 10, 23, 22, 0, 0, 0, time.UTC)), Metrics: &analyticsv1.Metrics{Impressions: 1200, Clicks: 40, Conversions: 3, UniqueUsers: 900, Events: 1250}},
		{StartTime: timestamppb.New(time.Date(2026, 10, 24, 22, 0, 0, 0, time.UTC)), Metrics: &analyticsv1.Metrics{}},
		{StartTime: timestamppb.New(time.Date(2026, 10, 25, 23, 0, 0, 0, time.UTC)), Metrics: &analyticsv1.Metrics{Impressions: 5, Events: 5, UniqueUsers: 5}},
	}}
	var b bytes.Buffer
	if err := writeSeries(&b, resp, berlin); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"BUCKET                     IMPRESSIONS  CLICKS  CONVERSIONS  USERS  EVENTS\n" +
		"2026-10-24T00:00:00+02:00  1200         40      3            900    1250\n" +
		"2026-10-25T00:00:00+02:00  0            0       0            0      0\n" +
		"2026-10-26T00:00:00+01:00  5            0       0            5      5\n"
	if b.String() != want {
		t.Errorf("table =\n%s\nwant\n%s", b.String(), want)
	}

	// Through the command: the buckets are labelled in -tz.
	srv := &fakeAnalytics{series: func(*analyticsv1.GetMetricSeriesRequest) (*analyticsv1.GetMetricSeriesResponse, error) {
		return resp, nil
	}}
	c := newMetricsCLI(t, srv)
	if code := c.run(t.Context(), []string{"metrics", "series", "-granularity", "day", "-tz", "America/New_York", "-since", "7d"}); code != 0 {
		t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
	}
	if !strings.Contains(c.stdout.String(), "2026-10-23T18:00:00-04:00  1200") {
		t.Errorf("buckets not labelled in New York time:\n%s", c.stdout)
	}
}

func TestWriteBreakdown(t *testing.T) {
	t.Parallel()
	resp := &analyticsv1.GetBreakdownResponse{Rows: []*analyticsv1.BreakdownRow{
		{Value: "DE", Metrics: &analyticsv1.Metrics{Events: 500, Impressions: 400, Clicks: 20, Conversions: 2, UniqueUsers: 300, Ctr: 0.05, Cvr: 0.1,
			ConversionValue: []*analyticsv1.Money{{AmountMicros: 99_990_000, Currency: "EUR"}}}},
		{Value: "", Metrics: &analyticsv1.Metrics{Events: 7, UniqueUsers: 7}},
		{Value: "\x1b[31mred", Metrics: &analyticsv1.Metrics{Events: 1, UniqueUsers: 1}},
	}}
	var b bytes.Buffer
	if err := writeBreakdown(&b, resp); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"VALUE    EVENTS  IMPRESSIONS  CLICKS  CONVERSIONS  CTR    CVR     CONV.VALUE  SPEND  COST/CONV  USERS\n" +
		"DE       500     400          20      2            5.00%  10.00%  99.99 EUR   -      -          300\n" +
		"(none)   7       0            0       0            0.00%  0.00%   -           -      -          7\n" +
		"[31mred  1       0            0       0            0.00%  0.00%   -           -      -          1\n"
	if b.String() != want {
		t.Errorf("table =\n%s\nwant\n%s", b.String(), want)
	}
}

func TestWriteFunnel(t *testing.T) {
	t.Parallel()
	resp := &analyticsv1.GetFunnelResponse{Steps: []*analyticsv1.FunnelStepResult{
		{Step: &analyticsv1.FunnelStep{EventName: "signup"}, Users: 1000, ConversionFromStart: 1, ConversionFromPrevious: 1},
		{Step: &analyticsv1.FunnelStep{EventName: "add_to_cart"}, Users: 420, ConversionFromStart: 0.42, ConversionFromPrevious: 0.42},
		{Step: &analyticsv1.FunnelStep{EventName: "purchase", CampaignId: "spring-sale"}, Users: 105, ConversionFromStart: 0.105, ConversionFromPrevious: 0.25},
	}}
	var b bytes.Buffer
	if err := writeFunnel(&b, resp); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"STEP                    USERS  FROM START  FROM PREVIOUS\n" +
		"1 signup                1000   100.00%     -\n" +
		"2 add_to_cart           420    42.00%      42.00%\n" +
		"3 purchase@spring-sale  105    10.50%      25.00%\n"
	if b.String() != want {
		t.Errorf("table =\n%s\nwant\n%s", b.String(), want)
	}
}

// TestMetricsOutput runs each command against the server, as a table and as JSON.
func TestMetricsOutput(t *testing.T) {
	t.Parallel()
	srv := &fakeAnalytics{
		summary: func(*analyticsv1.GetCampaignSummaryRequest) (*analyticsv1.GetCampaignSummaryResponse, error) {
			return testSummary, nil
		},
		funnel: func(*analyticsv1.GetFunnelRequest) (*analyticsv1.GetFunnelResponse, error) {
			return &analyticsv1.GetFunnelResponse{Steps: []*analyticsv1.FunnelStepResult{
				{Step: &analyticsv1.FunnelStep{EventName: "a"}, Users: 2, ConversionFromStart: 1},
				{Step: &analyticsv1.FunnelStep{EventName: "b"}, Users: 1, ConversionFromStart: 0.5, ConversionFromPrevious: 0.5},
			}}, nil
		},
	}

	c := newMetricsCLI(t, srv)
	if code := c.run(t.Context(), []string{"metrics", "summary", "-campaign", "spring-sale"}); code != 0 {
		t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
	}
	var want bytes.Buffer
	writeSummary(&want, testSummary)
	if c.stdout.String() != want.String() {
		t.Errorf("stdout =\n%s\nwant\n%s", c.stdout, &want)
	}
	if c.stderr.Len() != 0 {
		t.Errorf("stderr = %q", c.stderr)
	}

	c = newMetricsCLI(t, srv)
	if code := c.run(t.Context(), []string{"-o", "json", "metrics", "summary", "-campaign", "spring-sale"}); code != 0 {
		t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
	}
	var got analyticsv1.GetCampaignSummaryResponse
	if err := protojson.Unmarshal(c.stdout.Bytes(), &got); err != nil {
		t.Fatalf("stdout is not a GetCampaignSummaryResponse: %v\n%s", err, c.stdout)
	}
	if !proto.Equal(&got, testSummary) {
		t.Errorf("got %v, want %v", &got, testSummary)
	}
	if !regexp.MustCompile(`"amountMicros":\s*"12500000"`).MatchString(c.stdout.String()) {
		t.Errorf("JSON is not protojson:\n%s", c.stdout)
	}

	c = newMetricsCLI(t, srv)
	if code := c.run(t.Context(), []string{"metrics", "funnel", "-step", "a", "-step", "b"}); code != 0 {
		t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
	}
	if !strings.Contains(c.stdout.String(), "2 b   1      50.00%      50.00%") {
		t.Errorf("stdout =\n%s", c.stdout)
	}
}

func TestMetricsServerError(t *testing.T) {
	t.Parallel()
	st, err := status.New(codes.InvalidArgument, "invalid request").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "end_time", Description: "at most 31 days after start_time for hourly buckets"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &fakeAnalytics{
		series: func(*analyticsv1.GetMetricSeriesRequest) (*analyticsv1.GetMetricSeriesResponse, error) {
			return nil, st.Err()
		},
	}
	c := newMetricsCLI(t, srv)
	if code := c.run(t.Context(), []string{"metrics", "series", "-granularity", "hour", "-since", "60d"}); code != 1 {
		t.Errorf("exit code = %d, want 1", code)
	}
	want := "cmesh: invalid request (InvalidArgument)\n  end_time: at most 31 days after start_time for hourly buckets\n"
	if c.stderr.String() != want {
		t.Errorf("stderr = %q, want %q", c.stderr, want)
	}

	// A breakdown the server does not serve: Unimplemented, as any command prints it.
	c = newMetricsCLI(t, &fakeAnalytics{breakdown: func(*analyticsv1.GetBreakdownRequest) (*analyticsv1.GetBreakdownResponse, error) {
		return nil, status.Error(codes.PermissionDenied, "missing permission analytics.read")
	}})
	if code := c.run(t.Context(), []string{"metrics", "breakdown", "-by", "app"}); code != 1 {
		t.Errorf("exit code = %d, want 1", code)
	}
	if want := "cmesh: missing permission analytics.read (PermissionDenied)\n"; c.stderr.String() != want {
		t.Errorf("stderr = %q, want %q", c.stderr, want)
	}
}

func TestMetricsNotLoggedIn(t *testing.T) {
	t.Parallel()
	c := newTestCLI(t, nil, nil)
	if code := c.run(t.Context(), []string{"metrics", "summary", "-campaign", "c1"}); code != 1 {
		t.Errorf("exit code = %d, want 1", code)
	}
	if want := "cmesh: not logged in; run cmesh login\n"; c.stderr.String() != want {
		t.Errorf("stderr = %q, want %q", c.stderr, want)
	}
}

// lineWriter is a goroutine-safe stdout that hands each complete line to a channel.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for _, l := range strings.SplitAfter(string(p), "\n") {
		if strings.HasSuffix(l, "\n") {
			w.lines <- strings.TrimSuffix(l, "\n")
		}
	}
	return len(p), nil
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func push(at time.Time, impressions, clicks, conversions, users int64) *analyticsv1.WatchCampaignMetricsResponse {
	return &analyticsv1.WatchCampaignMetricsResponse{Time: timestamppb.New(at), Metrics: &analyticsv1.Metrics{
		Impressions: impressions, Clicks: clicks, Conversions: conversions, UniqueUsers: users, Events: impressions + clicks + conversions,
	}}
}

// liveServer pushes two messages on the first stream and ends it, as the server does after
// an hour; on the next it pushes one and waits for the caller to go away.
func liveServer(t *testing.T, want *analyticsv1.WatchCampaignMetricsRequest) *fakeAnalytics {
	var mu sync.Mutex
	streams := 0
	return &fakeAnalytics{watch: func(req *analyticsv1.WatchCampaignMetricsRequest, s grpc.ServerStreamingServer[analyticsv1.WatchCampaignMetricsResponse]) error {
		if !proto.Equal(req, want) {
			t.Errorf("request = %v, want %v", req, want)
		}
		mu.Lock()
		streams++
		n := streams
		mu.Unlock()
		if n == 1 {
			s.Send(push(testNow, 100, 5, 1, 80))
			s.Send(push(testNow.Add(5*time.Second), 120, 6, 1, 90))
			return nil
		}
		s.Send(push(testNow.Add(time.Hour), 9000, 300, 25, 4000))
		<-s.Context().Done()
		return s.Context().Err()
	}}
}

// TestMetricsLiveInterrupt runs metrics live until SIGINT, as Ctrl-C sends it. It does not
// run in parallel: no other test may be listening for the signal meanwhile.
func TestMetricsLiveInterrupt(t *testing.T) {
	self, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	want := &analyticsv1.WatchCampaignMetricsRequest{CampaignId: "c1", IntervalSeconds: 5}
	c := newMetricsCLI(t, liveServer(t, want))
	out := &lineWriter{lines: make(chan string, 100)}
	c.app.stdout = out
	done := make(chan int)
	go func() { done <- c.run(context.Background(), []string{"metrics", "live", "-campaign", "c1"}) }()
	for range 4 { // the header and three pushes
		select {
		case <-out.lines:
		case code := <-done:
			t.Fatalf("exit code = %d before the interrupt; stderr:\n%s", code, c.stderr)
		case <-time.After(10 * time.Second):
			t.Fatalf("no push; stdout:\n%s", out)
		}
	}
	if err := self.Signal(os.Interrupt); err != nil {
		t.Skipf("cannot send SIGINT here: %v", err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code = %d, want 0; stderr:\n%s", code, c.stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("metrics live did not stop on SIGINT")
	}
	wantOut := "" +
		"TIME                  IMPRESSIONS  CLICKS       CONVERSIONS  USERS\n" +
		"2026-11-22T12:00:00Z  100          5            1            80\n" +
		"2026-11-22T12:00:05Z  120          6            1            90\n" +
		"2026-11-22T13:00:00Z  9000         300          25           4000\n"
	if out.String() != wantOut {
		t.Errorf("stdout =\n%s\nwant\n%s", out, wantOut)
	}
	if c.stderr.Len() != 0 {
		t.Errorf("stderr = %q", c.stderr)
	}
}

// TestMetricsLiveJSON prints one protojson object per line and stops when its context ends.
func TestMetricsLiveJSON(t *testing.T) {
	t.Parallel()
	want := &analyticsv1.WatchCampaignMetricsRequest{CampaignId: "c1", IntervalSeconds: 2, StartTime: timestamppb.New(testNow.Add(-30 * time.Minute)), ExactUniqueUsers: true}
	c := newMetricsCLI(t, liveServer(t, want))
	out := &lineWriter{lines: make(chan string, 100)}
	c.app.stdout = out
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int)
	go func() {
		done <- c.run(ctx, []string{"-o", "json", "metrics", "live", "-campaign", "c1", "-interval", "2s", "-since", "30m", "-exact-users"})
	}()
	var got []*analyticsv1.WatchCampaignMetricsResponse
	for range 3 {
		select {
		case l := <-out.lines:
			var m analyticsv1.WatchCampaignMetricsResponse
			if err := protojson.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("line %q is not a WatchCampaignMetricsResponse: %v", l, err)
			}
			got = append(got, &m)
		case <-time.After(10 * time.Second):
			t.Fatalf("no push; stdout:\n%s", out)
		}
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit code = %d, want 0; stderr:\n%s", code, c.stderr)
	}
	if !proto.Equal(got[2], push(testNow.Add(time.Hour), 9000, 300, 25, 4000)) {
		t.Errorf("third push = %v", got[2])
	}
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		if !strings.HasPrefix(sc.Text(), "{") {
			t.Errorf("line %q is not a JSON object", sc.Text())
		}
	}
}

// TestMetricsLiveErrors: a stream the server refuses is an error like any call's; a stream
// it ends without a push is not reopened.
func TestMetricsLiveErrors(t *testing.T) {
	t.Parallel()
	c := newMetricsCLI(t, &fakeAnalytics{watch: func(*analyticsv1.WatchCampaignMetricsRequest, grpc.ServerStreamingServer[analyticsv1.WatchCampaignMetricsResponse]) error {
		return status.Error(codes.NotFound, "campaign c1 not found")
	}})
	if code := c.run(t.Context(), []string{"metrics", "live", "-campaign", "c1"}); code != 1 {
		t.Errorf("exit code = %d, want 1", code)
	}
	if want := "cmesh: campaign c1 not found (NotFound)\n"; c.stderr.String() != want {
		t.Errorf("stderr = %q, want %q", c.stderr, want)
	}

	var streams atomic.Int32
	c = newMetricsCLI(t, &fakeAnalytics{watch: func(*analyticsv1.WatchCampaignMetricsRequest, grpc.ServerStreamingServer[analyticsv1.WatchCampaignMetricsResponse]) error {
		streams.Add(1)
		return nil
	}})
	if code := c.run(t.Context(), []string{"metrics", "live", "-campaign", "c1"}); code != 1 {
		t.Errorf("exit code = %d, want 1", code)
	}
	if want := "cmesh: live: the server ended the stream without a push\n"; c.stderr.String() != want {
		t.Errorf("stderr = %q, want %q", c.stderr, want)
	}
	if n := streams.Load(); n != 1 {
		t.Errorf("%d streams opened, want 1", n)
	}
}

func TestMetricsHelp(t *testing.T) {
	t.Parallel()
	c := newTestCLI(t, nil, nil)
	if code := c.run(t.Context(), []string{"help"}); code != 0 {
		t.Fatalf("exit code = %d", code)
	}
	for _, want := range []string{"metrics summary", "metrics series", "metrics breakdown", "metrics funnel", "metrics live"} {
		if !strings.Contains(c.stdout.String(), want) {
			t.Errorf("help does not list %q:\n%s", want, c.stdout)
		}
	}
	c = newTestCLI(t, nil, nil)
	if code := c.run(t.Context(), []string{"metrics", "funnel", "-h"}); code != 0 {
		t.Fatalf("exit code = %d", code)
	}
	for _, want := range []string{"-step name", "name@campaign", "-window duration", "7d"} {
		if !strings.Contains(c.stdout.String(), want) {
			t.Errorf("funnel help does not contain %q:\n%s", want, c.stdout)
		}
	}
}
