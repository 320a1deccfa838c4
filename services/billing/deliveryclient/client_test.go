package deliveryclient_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/services/billing"
	"github.com/campaignmesh/campaignmesh/services/billing/deliveryclient"
)

// deliveryStub stands in for the delivery service behind the real server chain (mTLS, access
// rules: GetUsageCounts is billing's alone).
type deliveryStub struct {
	deliveryv1.UnimplementedDeliveryUsageServiceServer
	days []string
}

func (a *deliveryStub) GetUsageCounts(_ context.Context, req *deliveryv1.GetUsageCountsRequest) (*deliveryv1.GetUsageCountsResponse, error) {
	a.days = append(a.days, req.GetDay())
	return &deliveryv1.GetUsageCountsResponse{Tenants: []*deliveryv1.TenantUsageCounts{
		{TenantId: "t1", MessagesEmail: 12, MessagesSms: 3, ContactsStored: 4096}, {TenantId: "t2", ContactsStored: 300},
	}}, nil
}

func serve(t *testing.T, ca *mtls.CA) (string, *deliveryStub) {
	t.Helper()
	stub := &deliveryStub{}
	srv := grpcserver.New(grpcserver.WithService("delivery"), grpcserver.WithLogger(slog.New(slog.DiscardHandler)),
		grpcserver.WithTLS(mtlstest.Source(t, ca, "delivery").ServerConfig()), grpcserver.WithAuditor(natstest.AuditSink(t, "delivery")))
	deliveryv1.RegisterDeliveryUsageServiceServer(srv.GRPC(), stub)
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
	client, conn, err := deliveryclient.Dial(addr, mtlstest.Source(t, ca, "billing"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	got, err := client.UsageCounts(context.Background(), time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	want := []billing.SourceCounts{
		{TenantID: "t1", Values: map[billing.Meter]int64{billing.MessagesEmail: 12, billing.MessagesSMS: 3, billing.ContactsStored: 4096}},
		{TenantID: "t2", Values: map[billing.Meter]int64{billing.MessagesEmail: 0, billing.MessagesSMS: 0, billing.ContactsStored: 300}},
	}
	if diff := cmp.Diff(want, got); diff != "" || len(stub.days) != 1 || stub.days[0] != "2026-11-29" {
		t.Fatalf("counts (-want +got):\n%s\ndays asked %v", diff, stub.days)
	}
}

func TestOnlyBillingMayAskForUsageCounts(t *testing.T) {
	t.Parallel()
	ca := mtlstest.NewCA(t)
	addr, _ := serve(t, ca)
	conn, err := grpcclient.Dial(addr, "delivery", mtlstest.Source(t, ca, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := deliveryclient.New(conn).UsageCounts(context.Background(), time.Now()); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("asked by the gateway identity: %v, want PERMISSION_DENIED", err)
	}
}
