package analyticsclient_test

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
	"github.com/campaignmesh/campaignmesh/services/campaigns/analyticsclient"
)

// analyticsStub stands in for the analytics service behind the real server chain (mTLS,
// access rules): it answers every campaign with 1 USD of spend per started day of the range
// and records the requests.
type analyticsStub struct {
	analyticsv1.UnimplementedAnalyticsServiceServer
	mu   sync.Mutex
	reqs []*analyticsv1.GetCampaignSpendRequest
}

func (a *analyticsStub) GetCampaignSpend(_ context.Context, req *analyticsv1.GetCampaignSpendRequest) (*analyticsv1.GetCampaignSpendResponse, error) {
	a.mu.Lock()
	a.reqs = append(a.reqs, req)
	a.mu.Unlock()
	if len(req.GetCampaignIds()) > 1000 || req.GetEndTime().AsTime().Sub(req.GetStartTime().AsTime()) > 400*24*time.Hour {
		return nil, status.Error(codes.InvalidArgument, "over the limits")
	}
	days := int64(req.GetEndTime().AsTime().Sub(req.GetStartTime().AsTime()).Hours()/24 + 0.999)
	resp := &analyticsv1.GetCampaignSpendResponse{}
	for _, id := range req.GetCampaignIds() {
		resp.Spends = append(resp.Spends,
			&analyticsv1.CampaignSpend{CampaignId: id, SpendMicros: days * 1_000_000, Currency: "USD"},
			&analyticsv1.CampaignSpend{CampaignId: id, SpendMicros: 5, Currency: "EUR"})
	}
	return resp, nil
}

func serve(t *testing.T, ca *mtls.CA) (string, *analyticsStub) {
	t.Helper()
	stub := &analyticsStub{}
	srv := grpcserver.New(grpcserver.WithService("analytics"), grpcserver.WithLogger(slog.New(slog.DiscardHandler)),
		grpcserver.WithTLS(mtlstest.Source(t, ca, "analytics").ServerConfig()), grpcserver.WithAuditor(natstest.AuditSink(t, "analytics")))
	analyticsv1.RegisterAnalyticsServiceServer(srv.GRPC(), stub)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() { cancel(); <-done })
	return lis.Addr().String(), stub
}

func TestSpendOverMTLSInPiecesAnalyticsAccepts(t *testing.T) {
	t.Parallel()
	ca := mtlstest.NewCA(t)
	addr, stub := serve(t, ca)
	client, conn, err := analyticsclient.Dial(addr, mtlstest.Source(t, ca, "campaigns"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	ids := make([]string, 2500)
	for i := range ids {
		ids[i] = string(rune('a'+i%26)) + time.Duration(i).String()
	}
	from := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	to := from.Add(800 * 24 * time.Hour) // three ranges: 366 + 366 + 68 days
	got, err := client.Spend(context.Background(), "t1", ids, from, to)
	if err != nil {
		t.Fatal(err)
	}
	if len(stub.reqs) != 9 {
		t.Errorf("%d calls, want 3 batches of campaigns x 3 ranges", len(stub.reqs))
	}
	for _, r := range stub.reqs {
		if r.GetTenantId() != "t1" {
			t.Errorf("call for tenant %q", r.GetTenantId())
		}
	}
	if len(got) != 2*len(ids) {
		t.Fatalf("%d rows, want one per campaign and currency", len(got))
	}
	i := slices.IndexFunc(got, func(s campaigns.Spend) bool { return s.CampaignID == ids[1234] && s.Currency == "USD" })
	if i < 0 || got[i].Micros != 800*1_000_000 {
		t.Errorf("spend of one campaign over 800 days: %+v", got[i])
	}
}

func TestOnlyTheCampaignsIdentityMayAskForSpend(t *testing.T) {
	t.Parallel()
	ca := mtlstest.NewCA(t)
	addr, _ := serve(t, ca)
	conn, err := grpcclient.Dial(addr, "analytics", mtlstest.Source(t, ca, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_, err = analyticsclient.New(conn).Spend(context.Background(), "t1", []string{"c"}, time.Now().Add(-time.Hour), time.Now())
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("spend asked by the gateway identity: %v, want PERMISSION_DENIED", err)
	}
	// And the client refuses a server that is not analytics.
	other, err := grpcclient.Dial(addr, "auth", mtlstest.Source(t, ca, "campaigns"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	if _, err := analyticsclient.New(other).Spend(context.Background(), "t1", []string{"c"}, time.Now().Add(-time.Hour), time.Now()); status.Code(err) != codes.Unavailable {
		t.Fatalf("spend from a server with the wrong identity: %v, want UNAVAILABLE (handshake refused)", err)
	}
}
