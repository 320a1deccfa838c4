// Package grpcapi serves the analytics API over gRPC (and REST through the gateway): thin
// handlers that decode a request into the domain's types, call the analytics service with the
// tenant taken from the credential, and encode its answer.
package grpcapi

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/services/analytics"
)

// Server implements analyticsv1.AnalyticsServiceServer.
type Server struct {
	analyticsv1.UnimplementedAnalyticsServiceServer
	svc    *analytics.Service
	usage  analytics.QueryRecorder // nil: queries are not recorded (WithUsage)
	counts *analytics.Usage        // nil: GetUsageCounts is not served (WithUsageCounts)
}

var _ analyticsv1.AnalyticsServiceServer = (*Server)(nil)

// NewServer returns the server over svc.
func NewServer(svc *analytics.Service) *Server { return &Server{svc: svc} }

func tenant(ctx context.Context) string { return authn.FromContext(ctx).TenantID }

// GetCampaignSummary implements analyticsv1.AnalyticsServiceServer.
func (s *Server) GetCampaignSummary(ctx context.Context, req *analyticsv1.GetCampaignSummaryRequest) (*analyticsv1.GetCampaignSummaryResponse, error) {
	r, err := s.svc.Summary(ctx, tenant(ctx), analytics.SummaryRequest{CampaignIDs: req.GetCampaignIds(),
		Start: requestTime(req.GetStartTime()), End: requestTime(req.GetEndTime()), ByVariant: req.GetByVariant(), Source: sourceFromProto(req.GetSource()),
		ExactUniqueUsers: req.GetExactUniqueUsers()})
	if err != nil {
		return nil, err
	}
	resp := &analyticsv1.GetCampaignSummaryResponse{Source: sourceToProto(r.Source), Total: metricsToProto(r.Total)}
	for _, c := range r.Campaigns {
		resp.Campaigns = append(resp.Campaigns, &analyticsv1.CampaignMetrics{CampaignId: c.CampaignID, Variant: c.Variant, Metrics: metricsToProto(c.Metrics)})
	}
	return resp, nil
}

// GetMetricSeries implements analyticsv1.AnalyticsServiceServer.
func (s *Server) GetMetricSeries(ctx context.Context, req *analyticsv1.GetMetricSeriesRequest) (*analyticsv1.GetMetricSeriesResponse, error) {
	r, err := s.svc.Series(ctx, tenant(ctx), analytics.SeriesRequest{CampaignID: req.GetCampaignId(),
		Start: requestTime(req.GetStartTime()), End: requestTime(req.GetEndTime()), Granularity: granularities[req.GetGranularity()],
		TimeZone: req.GetTimeZone(), Source: sourceFromProto(req.GetSource()), ExactUniqueUsers: req.GetExactUniqueUsers()})
	if err != nil {
		return nil, err
	}
	resp := &analyticsv1.GetMetricSeriesResponse{Source: sourceToProto(r.Source), Buckets: make([]*analyticsv1.Bucket, len(r.Buckets))}
	for i, b := range r.Buckets {
		resp.Buckets[i] = &analyticsv1.Bucket{StartTime: timestamppb.New(b.Start), Metrics: metricsToProto(b.Metrics)}
	}
	return resp, nil
}

// GetBreakdown implements analyticsv1.AnalyticsServiceServer.
func (s *Server) GetBreakdown(ctx context.Context, req *analyticsv1.GetBreakdownRequest) (*analyticsv1.GetBreakdownResponse, error) {
	r, err := s.svc.Breakdown(ctx, tenant(ctx), analytics.BreakdownRequest{CampaignID: req.GetCampaignId(),
		Start: requestTime(req.GetStartTime()), End: requestTime(req.GetEndTime()), Dimension: dimensions[req.GetDimension()],
		PropertyKey: req.GetPropertyKey(), Metric: metricFromProto(req.GetMetric()), Limit: int(req.GetLimit()), Source: sourceFromProto(req.GetSource()),
		ExactUniqueUsers: req.GetExactUniqueUsers()})
	if err != nil {
		return nil, err
	}
	resp := &analyticsv1.GetBreakdownResponse{Source: sourceToProto(r.Source), Rows: make([]*analyticsv1.BreakdownRow, len(r.Rows))}
	for i, row := range r.Rows {
		resp.Rows[i] = &analyticsv1.BreakdownRow{Value: row.Value, Metrics: metricsToProto(row.Metrics)}
	}
	return resp, nil
}

// GetFunnel implements analyticsv1.AnalyticsServiceServer.
func (s *Server) GetFunnel(ctx context.Context, req *analyticsv1.GetFunnelRequest) (*analyticsv1.GetFunnelResponse, error) {
	in := analytics.FunnelRequest{Start: requestTime(req.GetStartTime()), End: requestTime(req.GetEndTime()), WindowSeconds: req.GetWindowSeconds()}
	for _, st := range req.GetSteps() {
		in.Steps = append(in.Steps, analytics.FunnelStep{EventName: st.GetEventName(), CampaignID: st.GetCampaignId()})
	}
	r, err := s.svc.Funnel(ctx, tenant(ctx), in)
	if err != nil {
		return nil, err
	}
	resp := &analyticsv1.GetFunnelResponse{}
	for _, st := range r.Steps {
		resp.Steps = append(resp.Steps, &analyticsv1.FunnelStepResult{Step: &analyticsv1.FunnelStep{EventName: st.Step.EventName, CampaignId: st.Step.CampaignID},
			Users: st.Users, ConversionFromStart: st.ConversionFromStart, ConversionFromPrevious: st.ConversionFromPrevious})
	}
	return resp, nil
}

// WatchCampaignMetrics implements analyticsv1.AnalyticsServiceServer: one message a push of
// analytics.Service.Watch.
func (s *Server) WatchCampaignMetrics(req *analyticsv1.WatchCampaignMetricsRequest, stream analyticsv1.AnalyticsService_WatchCampaignMetricsServer) error {
	ctx := stream.Context()
	stream = s.metered(stream)
	in := analytics.WatchRequest{CampaignID: req.GetCampaignId(), IntervalSeconds: int64(req.GetIntervalSeconds()), Start: requestTime(req.GetStartTime()),
		ExactUniqueUsers: req.GetExactUniqueUsers()}
	return s.svc.Watch(ctx, tenant(ctx), in, func(at time.Time, m analytics.Metrics) error {
		return stream.Send(&analyticsv1.WatchCampaignMetricsResponse{Time: timestamppb.New(at), Metrics: metricsToProto(m)})
	})
}

// GetCampaignSpend implements analyticsv1.AnalyticsServiceServer (internal: campaigns).
func (s *Server) GetCampaignSpend(ctx context.Context, req *analyticsv1.GetCampaignSpendRequest) (*analyticsv1.GetCampaignSpendResponse, error) {
	spends, err := s.svc.Spend(ctx, analytics.SpendRequest{TenantID: req.GetTenantId(), CampaignIDs: req.GetCampaignIds(),
		Start: requestTime(req.GetStartTime()), End: requestTime(req.GetEndTime())})
	if err != nil {
		return nil, err
	}
	resp := &analyticsv1.GetCampaignSpendResponse{}
	for _, sp := range spends {
		resp.Spends = append(resp.Spends, &analyticsv1.CampaignSpend{CampaignId: sp.CampaignID, SpendMicros: sp.SpendMicros, Currency: sp.Currency})
	}
	return resp, nil
}

// MatchBehaviour implements analyticsv1.AnalyticsServiceServer (internal: delivery).
func (s *Server) MatchBehaviour(ctx context.Context, req *analyticsv1.MatchBehaviourRequest) (*analyticsv1.MatchBehaviourResponse, error) {
	ids, err := s.svc.MatchBehaviour(ctx, analytics.BehaviourRequest{TenantID: req.GetTenantId(), EventType: req.GetEventType(),
		EventName: req.GetEventName(), CampaignID: req.GetCampaignId(), Start: requestTime(req.GetStartTime()),
		End: requestTime(req.GetEndTime()), UserIDs: req.GetUserIds()})
	if err != nil {
		return nil, err
	}
	return &analyticsv1.MatchBehaviourResponse{UserIds: ids}, nil
}

// DeleteEvents implements analyticsv1.AnalyticsServiceServer (internal: dsr).
func (s *Server) DeleteEvents(ctx context.Context, req *analyticsv1.DeleteEventsRequest) (*analyticsv1.DeleteEventsResponse, error) {
	st, err := s.svc.Delete(ctx, analytics.DeleteRequest{TenantID: req.GetTenantId(), SubjectID: req.GetSubjectId(),
		Start: requestTime(req.GetStartTime()), End: requestTime(req.GetEndTime())})
	if err != nil {
		return nil, err
	}
	return &analyticsv1.DeleteEventsResponse{Done: st.Done, RemainingRows: st.RemainingRows, MutationId: st.MutationID}, nil
}

// requestTime decodes an optional timestamp; one outside Timestamp's range (or with bad
// nanos) is given but invalid, which the domain reports on its field.
func requestTime(ts *timestamppb.Timestamp) analytics.RequestTime {
	switch {
	case ts == nil:
		return analytics.RequestTime{}
	case ts.CheckValid() != nil:
		return analytics.RequestTime{Given: true, Invalid: true}
	}
	return analytics.At(ts.AsTime())
}

func sourceFromProto(s analyticsv1.DataSource) analytics.Source {
	switch s {
	case analyticsv1.DataSource_DATA_SOURCE_RAW:
		return analytics.SourceRaw
	case analyticsv1.DataSource_DATA_SOURCE_ROLLUP:
		return analytics.SourceRollup
	}
	return analytics.SourceAuto // unspecified, or a number this version does not know
}

func sourceToProto(s analytics.Source) analyticsv1.DataSource {
	switch s {
	case analytics.SourceRaw:
		return analyticsv1.DataSource_DATA_SOURCE_RAW
	case analytics.SourceRollup:
		return analyticsv1.DataSource_DATA_SOURCE_ROLLUP
	}
	return analyticsv1.DataSource_DATA_SOURCE_UNSPECIFIED
}

// granularities maps the wire's granularities; any other number is the zero Granularity, which
// the domain refuses.
var granularities = map[analyticsv1.Granularity]analytics.Granularity{
	analyticsv1.Granularity_GRANULARITY_MINUTE: analytics.Minute, analyticsv1.Granularity_GRANULARITY_HOUR: analytics.Hour,
	analyticsv1.Granularity_GRANULARITY_DAY: analytics.Day,
}

// dimensions maps the wire's breakdown dimensions; any other number is NoDimension, which a
// breakdown refuses.
var dimensions = map[analyticsv1.Dimension]analytics.Dimension{
	analyticsv1.Dimension_DIMENSION_EVENT_NAME: analytics.EventName, analyticsv1.Dimension_DIMENSION_EVENT_TYPE: analytics.EventType,
	analyticsv1.Dimension_DIMENSION_CAMPAIGN: analytics.Campaign, analyticsv1.Dimension_DIMENSION_VARIANT: analytics.Variant,
	analyticsv1.Dimension_DIMENSION_APP: analytics.App, analyticsv1.Dimension_DIMENSION_DEVICE: analytics.Device,
	analyticsv1.Dimension_DIMENSION_LOCALE: analytics.Locale, analyticsv1.Dimension_DIMENSION_PROPERTY: analytics.Property,
}

var metrics = map[analyticsv1.Metric]analytics.Metric{
	analyticsv1.Metric_METRIC_UNSPECIFIED: analytics.MetricEvents, analyticsv1.Metric_METRIC_EVENTS: analytics.MetricEvents,
	analyticsv1.Metric_METRIC_IMPRESSIONS: analytics.MetricImpressions, analyticsv1.Metric_METRIC_CLICKS: analytics.MetricClicks,
	analyticsv1.Metric_METRIC_CONVERSIONS: analytics.MetricConversions, analyticsv1.Metric_METRIC_CONVERSION_VALUE: analytics.MetricConversionValue,
	analyticsv1.Metric_METRIC_UNIQUE_USERS: analytics.MetricUniqueUsers, analyticsv1.Metric_METRIC_SPEND: analytics.MetricSpend,
}

func metricFromProto(m analyticsv1.Metric) analytics.Metric {
	if v, ok := metrics[m]; ok {
		return v
	}
	return analytics.UnknownMetric
}

func metricsToProto(m analytics.Metrics) *analyticsv1.Metrics {
	p := &analyticsv1.Metrics{Events: m.Events, Impressions: m.Impressions, Clicks: m.Clicks, Conversions: m.Conversions,
		UniqueUsers: m.UniqueUsers, Ctr: m.CTR, Cvr: m.CVR, ConversionValue: moneyToProto(m.ConversionValue), Spend: moneyToProto(m.Spend)}
	if c := m.CostPerConversion; c != nil {
		p.CostPerConversion = &analyticsv1.Money{AmountMicros: c.AmountMicros, Currency: c.Currency}
	}
	return p
}

func moneyToProto(ms []analytics.Money) []*analyticsv1.Money {
	var out []*analyticsv1.Money
	for _, m := range ms {
		out = append(out, &analyticsv1.Money{AmountMicros: m.AmountMicros, Currency: m.Currency})
	}
	return out
}
