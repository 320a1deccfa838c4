package grpcapi_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/grpcapi"
)

// TestResponsesCarryTheDomainsAnswer reads t1's one click (1,000 micros, campaign "c", now)
// through every handler and compares whole responses: each field of the domain's answer
// reaches the wire, and the data source is named.
func TestResponsesCarryTheDomainsAnswer(t *testing.T) {
	h := newHandlers(t)
	click := &analyticsv1.Metrics{Events: 1, Clicks: 1, UniqueUsers: 1, Spend: []*analyticsv1.Money{{AmountMicros: 1000, Currency: "USD"}}}
	const rollup, raw = analyticsv1.DataSource_DATA_SOURCE_ROLLUP, analyticsv1.DataSource_DATA_SOURCE_RAW

	summary, err := h.GetCampaignSummary(h.ctx, &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{"c", "none"}})
	want := &analyticsv1.GetCampaignSummaryResponse{Source: rollup, Total: click, Campaigns: []*analyticsv1.CampaignMetrics{
		{CampaignId: "c", Metrics: click}, {CampaignId: "none", Metrics: &analyticsv1.Metrics{}}}}
	if d := cmp.Diff(want, summary, protocmp.Transform()); err != nil || d != "" {
		t.Errorf("summary: %v (-want +got):\n%s", err, d)
	}

	breakdown, err := h.GetBreakdown(h.ctx, &analyticsv1.GetBreakdownRequest{Dimension: analyticsv1.Dimension_DIMENSION_EVENT_NAME, Metric: analyticsv1.Metric_METRIC_SPEND})
	wantRows := &analyticsv1.GetBreakdownResponse{Source: raw, Rows: []*analyticsv1.BreakdownRow{{Value: "tap", Metrics: click}}}
	if d := cmp.Diff(wantRows, breakdown, protocmp.Transform()); err != nil || d != "" {
		t.Errorf("breakdown: %v (-want +got):\n%s", err, d)
	}

	funnel, err := h.GetFunnel(h.ctx, &analyticsv1.GetFunnelRequest{Steps: []*analyticsv1.FunnelStep{{EventName: "tap", CampaignId: "c"}, {EventName: "buy"}}})
	wantSteps := &analyticsv1.GetFunnelResponse{Steps: []*analyticsv1.FunnelStepResult{
		{Step: &analyticsv1.FunnelStep{EventName: "tap", CampaignId: "c"}, Users: 1, ConversionFromStart: 1, ConversionFromPrevious: 1},
		{Step: &analyticsv1.FunnelStep{EventName: "buy"}}}}
	if d := cmp.Diff(wantSteps, funnel, protocmp.Transform()); err != nil || d != "" {
		t.Errorf("funnel: %v (-want +got):\n%s", err, d)
	}

	start := time.Now().Add(-2 * time.Hour).Truncate(time.Minute).Add(30 * time.Second)
	series, err := h.GetMetricSeries(h.ctx, &analyticsv1.GetMetricSeriesRequest{CampaignId: "c", Granularity: analyticsv1.Granularity_GRANULARITY_HOUR,
		TimeZone: "Asia/Kolkata", StartTime: timestamppb.New(start)})
	if err != nil || series.GetSource() != raw || len(series.GetBuckets()) < 3 {
		t.Fatalf("series: %v %v", series, err)
	}
	var clicks int64
	for i, b := range series.GetBuckets() {
		clicks += b.GetMetrics().GetClicks()
		// Hours in Asia/Kolkata (UTC+5:30) start at :30 UTC, one hour apart.
		if at := b.GetStartTime().AsTime(); at.Minute() != 30 || at.Second() != 0 || (i > 0 && at.Sub(series.GetBuckets()[i-1].GetStartTime().AsTime()) != time.Hour) {
			t.Errorf("bucket %d starts %s", i, at)
		}
	}
	if clicks != 1 {
		t.Errorf("series: %d clicks, want 1", clicks)
	}

	hour := time.Now().Truncate(time.Hour)
	spend, err := h.GetCampaignSpend(h.ctx, &analyticsv1.GetCampaignSpendRequest{TenantId: "t2", CampaignIds: []string{"c"},
		StartTime: timestamppb.New(hour.Add(-time.Hour)), EndTime: timestamppb.New(hour.Add(2 * time.Hour))})
	wantSpend := &analyticsv1.GetCampaignSpendResponse{Spends: []*analyticsv1.CampaignSpend{{CampaignId: "c", SpendMicros: 2000, Currency: "USD"}}}
	if d := cmp.Diff(wantSpend, spend, protocmp.Transform()); err != nil || d != "" {
		t.Errorf("spend: %v (-want +got):\n%s", err, d)
	}

	deleted, err := h.DeleteEvents(h.ctx, &analyticsv1.DeleteEventsRequest{TenantId: "t9", SubjectId: "nobody"})
	if d := cmp.Diff(&analyticsv1.DeleteEventsResponse{Done: true}, deleted, protocmp.Transform()); err != nil || d != "" {
		t.Errorf("delete: %v (-want +got):\n%s", err, d)
	}
}

// What only the wire can hold — a timestamp that is no time, an enum number this version does
// not know — is refused on the request's own field, or (a data source) left to the service.
func TestWireValuesTheDomainCannotHold(t *testing.T) {
	h := newHandlers(t)
	notATime := &timestamppb.Timestamp{Seconds: 1, Nanos: -1}
	hour := analyticsv1.Granularity_GRANULARITY_HOUR
	for name, tc := range map[string]struct {
		call  func() error
		field string
	}{
		"series end": {func() error {
			_, err := h.GetMetricSeries(h.ctx, &analyticsv1.GetMetricSeriesRequest{Granularity: hour, EndTime: notATime})
			return err
		}, "end_time"},
		"series start": {func() error {
			_, err := h.GetMetricSeries(h.ctx, &analyticsv1.GetMetricSeriesRequest{Granularity: hour, StartTime: notATime})
			return err
		}, "start_time"},
		"summary start": {func() error {
			_, err := h.GetCampaignSummary(h.ctx, &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{"c"}, StartTime: notATime})
			return err
		}, "start_time"},
		"delete range": {func() error {
			_, err := h.DeleteEvents(h.ctx, &analyticsv1.DeleteEventsRequest{TenantId: "t1", StartTime: notATime, EndTime: timestamppb.Now()})
			return err
		}, "start_time"},
		"live start": {func() error {
			return h.WatchCampaignMetrics(&analyticsv1.WatchCampaignMetricsRequest{CampaignId: "c", StartTime: notATime}, watchStream{ctx: h.ctx})
		}, "start_time"},
		"granularity": {func() error {
			_, err := h.GetMetricSeries(h.ctx, &analyticsv1.GetMetricSeriesRequest{Granularity: 12345})
			return err
		}, "granularity"},
		"dimension": {func() error {
			_, err := h.GetBreakdown(h.ctx, &analyticsv1.GetBreakdownRequest{Dimension: 999})
			return err
		}, "dimension"},
		"metric": {func() error {
			_, err := h.GetBreakdown(h.ctx, &analyticsv1.GetBreakdownRequest{Dimension: analyticsv1.Dimension_DIMENSION_CAMPAIGN, Metric: -3})
			return err
		}, "metric"},
	} {
		err := tc.call()
		if f := violatedFields(err); code(err) != codes.InvalidArgument || len(f) != 1 || f[0] != tc.field {
			t.Errorf("%s: %v (fields %v), want INVALID_ARGUMENT on %s", name, err, f, tc.field)
		}
	}
	resp, err := h.GetCampaignSummary(h.ctx, &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{"c"}, Source: 99})
	if err != nil || resp.GetSource() != analyticsv1.DataSource_DATA_SOURCE_ROLLUP {
		t.Errorf("summary with data source 99: %v %v, want the service's choice (the rollups)", resp.GetSource(), err)
	}
}

func violatedFields(err error) []string {
	st, _ := apperr.ToStatus(err)
	var out []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out = append(out, v.GetField())
			}
		}
	}
	return out
}

// exactRecorder is the real store, noting whether each aggregate it ran counted unique users
// exactly.
type exactRecorder struct {
	analytics.Store
	mu    sync.Mutex
	exact []bool
}

func (r *exactRecorder) Aggregate(ctx context.Context, q analytics.Query) ([]analytics.Aggregate, error) {
	r.mu.Lock()
	r.exact = append(r.exact, q.ExactUsers)
	r.mu.Unlock()
	return r.Store.Aggregate(ctx, q)
}

func (r *exactRecorder) take() []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.exact
	r.exact = nil
	return out
}

// errPushed ends a live stream after its first push.
var errPushed = errors.New("pushed")

// firstPush is a live stream's server side that ends the stream at its first push.
type firstPush struct {
	grpc.ServerStream
	ctx context.Context
}

func (w firstPush) Context() context.Context                             { return w.ctx }
func (w firstPush) Send(*analyticsv1.WatchCampaignMetricsResponse) error { return errPushed }

// exact_unique_users reaches the store on every request that returns unique users; without it
// the store counts them approximately.
func TestExactUniqueUsersReachesTheStore(t *testing.T) {
	_, conn := seededDatabase(t)
	store := &exactRecorder{Store: clickhouse.NewQueries(conn, conn, clickhouse.DefaultQueryLimits)}
	h := grpcapi.NewServer(analytics.NewService(store, analytics.DefaultLimits))
	ctx := authn.WithPrincipal(context.Background(), &authn.Principal{TenantID: "t1"})
	for _, exact := range []bool{false, true} {
		calls := map[string]func() error{
			"summary": func() error {
				_, err := h.GetCampaignSummary(ctx, &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{"c", "d"}, ByVariant: true, ExactUniqueUsers: exact})
				return err
			},
			"series": func() error {
				_, err := h.GetMetricSeries(ctx, &analyticsv1.GetMetricSeriesRequest{Granularity: analyticsv1.Granularity_GRANULARITY_HOUR, ExactUniqueUsers: exact})
				return err
			},
			"breakdown": func() error {
				_, err := h.GetBreakdown(ctx, &analyticsv1.GetBreakdownRequest{Dimension: analyticsv1.Dimension_DIMENSION_DEVICE, ExactUniqueUsers: exact})
				return err
			},
			"live": func() error {
				err := h.WatchCampaignMetrics(&analyticsv1.WatchCampaignMetricsRequest{CampaignId: "c", ExactUniqueUsers: exact}, firstPush{ctx: ctx})
				if errors.Is(err, errPushed) {
					return nil
				}
				return err
			},
		}
		for name, call := range calls {
			if err := call(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got := store.take(); len(got) == 0 || slices.Contains(got, !exact) {
				t.Errorf("%s with exact_unique_users %v: the store was asked for exact users %v", name, exact, got)
			}
		}
	}
}
