package main

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/grpcapi"
)

// inProcess calls the analytics handlers in-process for the bench's cases (no mTLS, no
// interceptors: the tenant is put in the context as the chain would).
type inProcess struct {
	analyticsv1.AnalyticsServiceClient // the methods the cases do not call: nil
	srv                                *grpcapi.Server
	tenant                             string
}

func (c inProcess) ctx(ctx context.Context) context.Context {
	return authn.WithPrincipal(ctx, &authn.Principal{TenantID: c.tenant})
}

func (c inProcess) GetCampaignSummary(ctx context.Context, in *analyticsv1.GetCampaignSummaryRequest, _ ...grpc.CallOption) (*analyticsv1.GetCampaignSummaryResponse, error) {
	return c.srv.GetCampaignSummary(c.ctx(ctx), in)
}

func (c inProcess) GetMetricSeries(ctx context.Context, in *analyticsv1.GetMetricSeriesRequest, _ ...grpc.CallOption) (*analyticsv1.GetMetricSeriesResponse, error) {
	return c.srv.GetMetricSeries(c.ctx(ctx), in)
}

func (c inProcess) GetBreakdown(ctx context.Context, in *analyticsv1.GetBreakdownRequest, _ ...grpc.CallOption) (*analyticsv1.GetBreakdownResponse, error) {
	return c.srv.GetBreakdown(c.ctx(ctx), in)
}

func (c inProcess) GetFunnel(ctx context.Context, in *analyticsv1.GetFunnelRequest, _ ...grpc.CallOption) (*analyticsv1.GetFunnelResponse, error) {
	return c.srv.GetFunnel(c.ctx(ctx), in)
}

// Every case's reference SQL answers what the service answers (check compares the three ways'
// figures and the source), on a small data set ending now.
func TestReferencesAnswerLikeTheService(t *testing.T) {
	ctx := context.Background()
	d := plan(config{seed: 1, events: 40_000, campaigns: 12, days: 2}, time.Now())
	conn, err := clickhouse.Open(ctx, chtest.Addr(), chtest.NewDatabase(t), clickhouse.User(chtest.Writer(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := load(ctx, conn, d); err != nil {
		t.Fatal(err)
	}
	store := clickhouse.NewQueries(conn, conn, clickhouse.DefaultQueryLimits)
	sent := &recorder{Store: store}
	client := inProcess{srv: grpcapi.NewServer(analytics.NewService(sent, analytics.DefaultLimits)), tenant: d.Tenants[0].ID}
	for _, qc := range cases(client, d.Tenants[0]) {
		if _, _, err := check(ctx, ctx, qc, sent, store, conn); err != nil {
			t.Error(err)
		}
	}
	if err := (&bench{}).usersError(ctx, conn, d); err != nil {
		t.Error(err)
	}
}
