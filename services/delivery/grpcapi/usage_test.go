package grpcapi_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/access"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
)

// DeliveryUsageService answers billing alone: every other mesh identity is refused, and so is
// every end user's credential relayed by the gateway, whatever the role. Billing gets the
// counts of every tenant; a bad day is INVALID_ARGUMENT.
func TestUsageCountsAuthorization(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.contactIn(t, "tenant-a")
	e.contactIn(t, "tenant-b")
	e.contactIn(t, "tenant-b")
	sd := deliveryv1.File_campaignmesh_delivery_v1_usage_proto.Services().ByName("DeliveryUsageService")
	if sd.Methods().Len() != 1 {
		t.Fatalf("DeliveryUsageService has %d methods, the test knows 1", sd.Methods().Len())
	}
	req := &deliveryv1.GetUsageCountsRequest{Day: time.Now().UTC().Format(time.DateOnly)}
	client := func(id string) deliveryv1.DeliveryUsageServiceClient {
		return deliveryv1.NewDeliveryUsageServiceClient(servicetest.Dial(t, e.d.Addr(), e.d.CA, id, "delivery"))
	}
	for _, id := range access.MeshIdentities {
		want := codes.PermissionDenied
		if id == "billing" {
			want = codes.OK
		}
		resp, err := client(id).GetUsageCounts(context.Background(), req)
		if got := status.Code(err); got != want {
			t.Errorf("as %s: %v, want %v", id, got, want)
		}
		if id == "billing" {
			got := map[string]int64{}
			for _, u := range resp.GetTenants() {
				got[u.GetTenantId()] = u.GetContactsStored()
			}
			if len(got) != 2 || got["tenant-a"] != 1 || got["tenant-b"] != 2 {
				t.Errorf("billing's counts: %v", resp.GetTenants())
			}
		}
	}
	gw := client("gateway")
	for _, role := range rbac.Roles() {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+e.token(t, "tenant-a", role))
		if _, err := gw.GetUsageCounts(ctx, req); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s through the gateway: %v, want PermissionDenied", role, err)
		}
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+e.apiKey("tenant-a", contactsRead))
	if _, err := gw.GetUsageCounts(ctx, req); status.Code(err) != codes.PermissionDenied {
		t.Errorf("an API key through the gateway: %v, want PermissionDenied", err)
	}
	billing := client("billing")
	for _, day := range []string{"", "2026-02-30", "1999-12-31", time.Now().UTC().Add(72 * time.Hour).Format(time.DateOnly)} {
		if _, err := billing.GetUsageCounts(context.Background(), &deliveryv1.GetUsageCountsRequest{Day: day}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("day %q: %v, want INVALID_ARGUMENT", day, err)
		}
	}
}
