package grpcapi_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/grpcapi"
)

func ts(s string) *timestamppb.Timestamp {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return timestamppb.New(t)
}

func code(err error) codes.Code {
	st, _ := apperr.ToStatus(err)
	return st.Code()
}

// handlers are the service's handlers called in-process (no interceptor chain, so that every
// request reaches decoding and the domain, even one the chain would refuse first) for tenant
// t1, over seededDatabase.
type handlers struct {
	*grpcapi.Server
	ctx context.Context
}

func newHandlers(t *testing.T) handlers {
	t.Helper()
	ctx := context.Background()
	_, conn := seededDatabase(t)
	svc := analytics.NewService(clickhouse.NewQueries(conn, conn, clickhouse.DefaultQueryLimits), analytics.DefaultLimits)
	return handlers{Server: grpcapi.NewServer(svc), ctx: authn.WithPrincipal(ctx, &authn.Principal{TenantID: "t1"})}
}

// watchStream is the server side of a live stream held in-process: it drops its pushes.
type watchStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w watchStream) Context() context.Context                             { return w.ctx }
func (w watchStream) Send(*analyticsv1.WatchCampaignMetricsResponse) error { return nil }

// Hostile but well-formed queries — times at the ends of Timestamp's range (outside
// ClickHouse's DateTime), unknown enum numbers, extreme integers, long strings — are refused
// as bad input or answered, never INTERNAL.
func TestHostileQueriesAreNeverInternal(t *testing.T) {
	h := newHandlers(t)
	ctx := h.ctx
	long := strings.Repeat("é", 50_000)
	year1, year9999 := &timestamppb.Timestamp{Seconds: -62135596800}, &timestamppb.Timestamp{Seconds: 253402300799}
	ancient, ancientEnd := ts("1900-01-01T00:00:00Z"), ts("1900-01-02T00:00:00Z")
	future, futureEnd := ts("2200-01-01T00:00:00Z"), ts("2200-01-02T00:00:00Z")
	check := func(what string, err error) {
		t.Helper()
		if c := code(err); c == codes.Internal || c == codes.Unknown {
			t.Errorf("%s: %v", what, err)
		}
	}
	type rng struct{ start, end *timestamppb.Timestamp }
	ranges := map[string]rng{"year 1": {year1, ts("0001-01-02T00:00:00Z")}, "year 9999": {ts("9999-12-30T00:00:00Z"), year9999},
		"1900": {ancient, ancientEnd}, "2200": {future, futureEnd}, "1969": {ts("1969-12-31T00:00:00Z"), ts("1970-01-01T01:00:00Z")}}
	for name, r := range ranges {
		_, err := h.GetCampaignSummary(ctx, &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{"c1"}, StartTime: r.start, EndTime: r.end})
		check("summary "+name, err)
		_, err = h.GetCampaignSummary(ctx, &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{"c1"}, StartTime: r.start, EndTime: r.end, Source: analyticsv1.DataSource_DATA_SOURCE_RAW})
		check("raw summary "+name, err)
		for _, g := range []analyticsv1.Granularity{analyticsv1.Granularity_GRANULARITY_MINUTE, analyticsv1.Granularity_GRANULARITY_HOUR, analyticsv1.Granularity_GRANULARITY_DAY} {
			_, err = h.GetMetricSeries(ctx, &analyticsv1.GetMetricSeriesRequest{Granularity: g, StartTime: r.start, EndTime: r.end, TimeZone: "Pacific/Kiritimati"})
			check("series "+name+" "+g.String(), err)
		}
		_, err = h.GetBreakdown(ctx, &analyticsv1.GetBreakdownRequest{CampaignId: "c1", StartTime: r.start, EndTime: r.end, Dimension: analyticsv1.Dimension_DIMENSION_VARIANT})
		check("breakdown "+name, err)
		_, err = h.GetFunnel(ctx, &analyticsv1.GetFunnelRequest{Steps: []*analyticsv1.FunnelStep{{EventName: "a"}, {EventName: "b"}}, StartTime: r.start, EndTime: r.end, WindowSeconds: 60})
		check("funnel "+name, err)
		_, err = h.GetCampaignSpend(ctx, &analyticsv1.GetCampaignSpendRequest{TenantId: "t1", CampaignIds: []string{"c1"}, StartTime: r.start, EndTime: r.end})
		check("spend "+name, err)
	}
	_, err := h.GetMetricSeries(ctx, &analyticsv1.GetMetricSeriesRequest{Granularity: 12345, TimeZone: long, CampaignId: long, Source: 99})
	check("series with unknown enums", err)
	_, err = h.GetBreakdown(ctx, &analyticsv1.GetBreakdownRequest{CampaignId: "c1", Dimension: 999, Metric: -3, Limit: math.MaxInt32, PropertyKey: long})
	check("breakdown with unknown enums", err)
	_, err = h.GetBreakdown(ctx, &analyticsv1.GetBreakdownRequest{CampaignId: "c1", Dimension: analyticsv1.Dimension_DIMENSION_PROPERTY, PropertyKey: `'\x00"` + long, Limit: math.MinInt32})
	check("breakdown by an odd property", err)
	for _, w := range []int64{math.MaxInt64, math.MinInt64, 0} {
		_, err = h.GetFunnel(ctx, &analyticsv1.GetFunnelRequest{Steps: []*analyticsv1.FunnelStep{{EventName: long}, {EventName: "b", CampaignId: long}}, WindowSeconds: w})
		check("funnel window", err)
	}
	err = h.WatchCampaignMetrics(&analyticsv1.WatchCampaignMetricsRequest{CampaignId: long, IntervalSeconds: math.MinInt32, StartTime: year1},
		watchStream{ctx: ctx})
	check("live", err)
	_, err = h.DeleteEvents(ctx, &analyticsv1.DeleteEventsRequest{TenantId: "t1", StartTime: year1, EndTime: year9999})
	check("delete all time", err)
}
