package grpcapi

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	"github.com/campaignmesh/campaignmesh/services/analytics"
)

// meteredMethods are the full names of the analytics API's public queries: every method of
// AnalyticsService whose access rule names a permission (end users' calls). The internal RPCs,
// whose rules name mesh callers, are not billed. Taken from the descriptor, so a query added
// to the API is metered without a change here.
var meteredMethods = func() map[string]bool {
	out := map[string]bool{}
	sd := analyticsv1.File_campaignmesh_analytics_v1_analytics_proto.Services().ByName("AnalyticsService")
	for i := 0; i < sd.Methods().Len(); i++ {
		md := sd.Methods().Get(i)
		if rule, _ := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule); rule.GetPermission() != "" {
			out["/"+string(sd.FullName())+"/"+string(md.Name())] = true
		}
	}
	return out
}()

// MeteredMethods lists the full method names whose answered calls are recorded as usage.
func MeteredMethods() []string {
	out := make([]string, 0, len(meteredMethods))
	for m := range meteredMethods {
		out = append(out, m)
	}
	return out
}

// WithUsage makes the server record every answered public query with rec
// (analytics.RecordQuery): the unary ones through UnaryInterceptor, which the server must be
// given (grpcserver.WithInnermost), the live stream before its first push.
func (s *Server) WithUsage(rec analytics.QueryRecorder) *Server {
	s.usage = rec
	return s
}

// UnaryInterceptor records one unit for each metered call whose handler succeeded, before the
// answer leaves; when the unit cannot be recorded the call fails UNAVAILABLE instead. Without
// WithUsage it passes calls through.
func (s *Server) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if s.usage == nil || !meteredMethods[info.FullMethod] {
			return handler(ctx, req)
		}
		resp, err := handler(ctx, req)
		if err != nil {
			return nil, err
		}
		if err := analytics.RecordQuery(ctx, s.usage, tenant(ctx)); err != nil {
			return nil, err
		}
		return resp, nil
	}
}

// meteredStream records one unit before the first message of a metered stream is sent.
type meteredStream struct {
	analyticsv1.AnalyticsService_WatchCampaignMetricsServer
	s        *Server
	once     sync.Once
	recorded error
}

// metered wraps a live stream so its opening is recorded (WithUsage); without a recorder it
// is the stream itself.
func (s *Server) metered(stream analyticsv1.AnalyticsService_WatchCampaignMetricsServer) analyticsv1.AnalyticsService_WatchCampaignMetricsServer {
	if s.usage == nil {
		return stream
	}
	return &meteredStream{AnalyticsService_WatchCampaignMetricsServer: stream, s: s}
}

func (m *meteredStream) Send(resp *analyticsv1.WatchCampaignMetricsResponse) error {
	m.once.Do(func() {
		ctx := m.Context()
		m.recorded = analytics.RecordQuery(ctx, m.s.usage, tenant(ctx))
	})
	if m.recorded != nil {
		return m.recorded
	}
	return m.AnalyticsService_WatchCampaignMetricsServer.Send(resp)
}

// WithUsageCounts serves billing's GetUsageCounts from counts (without it the RPC answers
// UNIMPLEMENTED).
func (s *Server) WithUsageCounts(counts *analytics.Usage) *Server {
	s.counts = counts
	return s
}

// GetUsageCounts implements analyticsv1.AnalyticsServiceServer (internal: billing).
func (s *Server) GetUsageCounts(ctx context.Context, req *analyticsv1.GetUsageCountsRequest) (*analyticsv1.GetUsageCountsResponse, error) {
	if s.counts == nil {
		return s.UnimplementedAnalyticsServiceServer.GetUsageCounts(ctx, req)
	}
	counts, err := s.counts.Counts(ctx, req.GetDay())
	if err != nil {
		return nil, err
	}
	resp := &analyticsv1.GetUsageCountsResponse{Tenants: make([]*analyticsv1.TenantUsageCounts, len(counts))}
	for i, c := range counts {
		resp.Tenants[i] = &analyticsv1.TenantUsageCounts{TenantId: c.TenantID, EventsStored: c.EventsStored, StorageBytes: c.StorageBytes}
	}
	return resp, nil
}
