package analyticsclient_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/services/billing"
	"github.com/campaignmesh/campaignmesh/services/billing/analyticsclient"
)

// analyticsStub stands in for the analytics service behind the real server chain (mTLS, access
// rules: GetUsageCounts is billing's alone).
type analyticsStub struct {
	analyticsv1.UnimplementedAnalyticsServiceServer
	days []string
}

func (a *analyticsStub) GetUsageCounts(_ context.Context, req *analyticsv1.GetUsageCountsRequest) (*analyticsv1.GetUsageCountsResponse, error) {
	a.days = append(a.days, req.GetDay())
	return &analyticsv1.GetUsageCountsResponse{Tenants: []*analyticsv1.TenantUsageCounts{
		{TenantId: "t1", EventsStored: 12, StorageBytes: 4096}, {TenantId: "t2", EventsStored: 1, StorageBytes: 300},
	}}, nil
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

func TestUsageCountsOverMTLS(t *testing.T) {
	t.Parallel()
	ca := mtlstest.NewCA(t)
	addr, stub := serve(t, ca)
	client, conn, err := analyticsclient.Dial(addr, mtlstest.Source(t, ca, "billing"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	got, err := client.UsageCounts(context.Background(), time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	want := []billing.SourceCounts{
		{TenantID: "t1", Values: map[billing.Meter]int64{billing.EventsStored: 12, billing.StorageBytes: 4096}},
		{TenantID: "t2", Values: map[billing.Meter]int64{billing.EventsStored: 1, billing.StorageBytes: 300}},
	}
	if diff := cmp.Diff(want, got); diff != "" || len(stub.days) != 1 || stub.days[0] != "2026-11-29" {
		t.Fatalf("counts (-want +got):\n%s\ndays asked %v", diff, stub.days)
	}
}

func TestOnlyBillingMayAskForUsageCounts(t *testing.T) {
	t.Parallel()
	ca := mtlstest.NewCA(t)
	addr, _ := serve(t, ca)
	conn, err := grpcclient.Dial(addr, "analytics", mtlstest.Source(t, ca, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := analyticsclient.New(conn).UsageCounts(context.Background(), time.Now()); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("asked by the gateway identity: %v, want PERMISSION_DENIED", err)
	}
}
