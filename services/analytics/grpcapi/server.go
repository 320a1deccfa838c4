// Package grpcapi serves the analytics API over gRPC (and REST through the gateway): thin
// handlers over the analytics service, with the tenant always taken from the credential.
package grpcapi

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/services/analytics"
)

// MaxLiveStream is how long a live metrics stream runs before the server ends it (clients
// reconnect), so no stream holds resources forever.
const MaxLiveStream = time.Hour

// Server implements analyticsv1.AnalyticsServiceServer.
type Server struct {
	analyticsv1.UnimplementedAnalyticsServiceServer
	svc *analytics.Service
}

var _ analyticsv1.AnalyticsServiceServer = (*Server)(nil)

// NewServer returns the server over svc.
func NewServer(svc *analytics.Service) *Server { return &Server{svc: svc} }

func tenant(ctx context.Context) string { return authn.FromContext(ctx).TenantID }

// GetCampaignSummary implements analyticsv1.AnalyticsServiceServer.
func (s *Server) GetCampaignSummary(ctx context.Context, req *analyticsv1.GetCampaignSummaryRequest) (*analyticsv1.GetCampaignSummaryResponse, error) {
	return s.svc.Summary(ctx, tenant(ctx), req)
}

// GetMetricSeries implements analyticsv1.AnalyticsServiceServer.
func (s *Server) GetMetricSeries(ctx context.Context, req *analyticsv1.GetMetricSeriesRequest) (*analyticsv1.GetMetricSeriesResponse, error) {
	return s.svc.Series(ctx, tenant(ctx), req)
}

// GetBreakdown implements analyticsv1.AnalyticsServiceServer.
func (s *Server) GetBreakdown(ctx context.Context, req *analyticsv1.GetBreakdownRequest) (*analyticsv1.GetBreakdownResponse, error) {
	return s.svc.Breakdown(ctx, tenant(ctx), req)
}

// GetFunnel implements analyticsv1.AnalyticsServiceServer.
func (s *Server) GetFunnel(ctx context.Context, req *analyticsv1.GetFunnelRequest) (*analyticsv1.GetFunnelResponse, error) {
	return s.svc.Funnel(ctx, tenant(ctx), req)
}

// WatchCampaignMetrics implements analyticsv1.AnalyticsServiceServer: a push at once, then one
// every interval, until the client goes away or MaxLiveStream has passed.
func (s *Server) WatchCampaignMetrics(req *analyticsv1.WatchCampaignMetricsRequest, stream analyticsv1.AnalyticsService_WatchCampaignMetricsServer) error {
	ctx := stream.Context()
	campaign, interval, start, err := s.svc.LiveRequest(req)
	if err != nil {
		return err
	}
	t := tenant(ctx)
	release, err := s.svc.OpenLive(t)
	if err != nil {
		return err
	}
	defer release()
	ctx, cancel := context.WithTimeout(ctx, MaxLiveStream)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		m, err := s.svc.Live(ctx, t, campaign, start)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := stream.Send(&analyticsv1.WatchCampaignMetricsResponse{Time: timestamppb.Now(), Metrics: m}); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// GetCampaignSpend implements analyticsv1.AnalyticsServiceServer (internal: campaigns).
func (s *Server) GetCampaignSpend(ctx context.Context, req *analyticsv1.GetCampaignSpendRequest) (*analyticsv1.GetCampaignSpendResponse, error) {
	return s.svc.Spend(ctx, req)
}

// DeleteEvents implements analyticsv1.AnalyticsServiceServer (internal: dsr).
func (s *Server) DeleteEvents(ctx context.Context, req *analyticsv1.DeleteEventsRequest) (*analyticsv1.DeleteEventsResponse, error) {
	return s.svc.Delete(ctx, req)
}
