package grpcapi_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/access"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// Only billing may suspend a tenant for billing; the suspension is SuspendTenant's (logins
// refused), a repeat succeeds and changes nothing, and the record sits in the tenant's chain.
func TestSuspendTenantForBilling(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	f := e.tenantWithRoles(t, "unpaid")
	req := &authv1.SuspendTenantForBillingRequest{TenantId: f.tenant.ID, Reason: "flagged since 2026-11-20"}
	for _, svc := range access.MeshIdentities {
		if svc == "billing" {
			continue
		}
		if _, err := e.clientAs(t, svc).SuspendTenantForBilling(ctx, req); status.Code(err) != codes.PermissionDenied {
			t.Errorf("as %s: %v, want PERMISSION_DENIED", svc, err)
		}
	}
	if _, err := e.client.SuspendTenantForBilling(as(e.operator(t)), req); status.Code(err) != codes.PermissionDenied {
		t.Errorf("an operator through the gateway: %v, want PERMISSION_DENIED", err)
	}
	if _, err := e.client.SuspendTenantForBilling(as(f.tokens[rbac.Admin]), req); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a tenant admin: %v", err)
	}
	if _, err := e.client.Login(ctx, &authv1.LoginRequest{Tenant: "unpaid", Email: "viewer@unpaid.example", Password: password}); err != nil {
		t.Fatalf("a refused suspension suspended: %v", err)
	}

	billing := e.clientAs(t, "billing")
	for range 2 {
		tn, err := billing.SuspendTenantForBilling(ctx, req)
		if err != nil || tn.GetState() != authv1.Tenant_STATE_SUSPENDED {
			t.Fatalf("suspend: %v, %v", tn, err)
		}
	}
	if _, err := e.client.Login(ctx, &authv1.LoginRequest{Tenant: "unpaid", Email: "viewer@unpaid.example", Password: password}); err == nil {
		t.Fatal("a user of a tenant suspended for billing logged in")
	}
	recs := e.records(t, f.tenant.ID, "/campaignmesh.auth.v1.AuthService/SuspendTenantForBilling")
	byBilling := 0
	for _, r := range recs {
		if r.OutcomeName == "OK" && r.Actor == "service:billing" && r.ActorKind == "service" && r.Resource == f.tenant.ID {
			byBilling++
		}
	}
	if byBilling != 2 {
		t.Fatalf("records of billing's two calls in the tenant's chain: %d (%+v)", byBilling, recs)
	}

	for name, bad := range map[string]*authv1.SuspendTenantForBillingRequest{
		"not an id":   {TenantId: "x"},
		"long reason": {TenantId: f.tenant.ID, Reason: string(make([]byte, 513))},
	} {
		if _, err := billing.SuspendTenantForBilling(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := billing.SuspendTenantForBilling(ctx, &authv1.SuspendTenantForBillingRequest{TenantId: "00000000-0000-4000-8000-0000000000ff"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown tenant: %v", err)
	}
}
