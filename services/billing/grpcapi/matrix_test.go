package grpcapi_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
)

var usageService = billingv1.File_campaignmesh_billing_v1_service_proto.Services().ByName("BillingService")

// usageKeyring verifies the issuer's access tokens and the test's API keys (any scopes, even ones
// auth would never let a tenant's key carry, such as billing.manage).
type usageKeyring struct {
	jwt  authn.Verifier
	keys sync.Map // secret → *authn.Principal
	n    atomic.Int64
}

func (k *usageKeyring) Verify(ctx context.Context, credential string) (*authn.Principal, error) {
	if p, ok := k.keys.Load(credential); ok {
		cp := *p.(*authn.Principal)
		return &cp, nil
	}
	return k.jwt.Verify(ctx, credential)
}

func (k *usageKeyring) apiKey(tenant string, scopes ...string) string {
	secret := fmt.Sprintf("cmk_test_%d", k.n.Add(1))
	k.keys.Store(secret, &authn.Principal{TenantID: tenant, Subject: "key-" + secret, Kind: authn.KindAPIKey, Permissions: scopes})
	return secret
}

type usageEnv struct {
	b      *servicetest.Billing
	conn   *grpc.ClientConn
	issuer *meshtest.Issuer
	keys   *usageKeyring
}

func newUsageEnv(t *testing.T) *usageEnv {
	t.Helper()
	issuer := meshtest.NewIssuer(t)
	keys := &usageKeyring{jwt: issuer.Verifier()}
	b := servicetest.StartBilling(t, servicetest.BillingOptions{Verifier: keys})
	return &usageEnv{b: b, conn: servicetest.Dial(t, b.Addr(), b.CA, "gateway", "billing"), issuer: issuer, keys: keys}
}

func (e *usageEnv) token(t *testing.T, tenant string, role rbac.Role) string {
	return e.issuer.Token(t, tenant, role, string(role)+"@"+tenant)
}

// tenantTargeted are the RPCs naming a tenant a tenant's caller may read only when it is its
// own: another tenant's answers NOT_FOUND, exactly as for one that does not exist.
var tenantTargeted = map[string]bool{"GetUsage": true, "GetPlan": true}

// The authorization matrix: every RPC of BillingService × every role of the rbac table (tenant
// roles and the platform operator), API keys with usage.read, with billing.manage, with both
// and with only campaigns.read, and no credential × a target tenant that is the caller's own or
// another — each call asserting the exact code over gRPC through the real interceptor chain
// and mTLS. The expected code comes from the RPC's access rule and the caller's permissions,
// and plan management is the platform operator's alone even for a tenant's key that carries
// billing.manage.
func TestUsageAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	e := newUsageEnv(t)
	own, foreign := "tenant-own", "tenant-foreign"
	requests := map[string]func(tenant string) proto.Message{
		"GetUsage": func(tn string) proto.Message {
			return &billingv1.GetUsageRequest{TenantId: tn, StartDay: "2026-11-01", EndDay: "2026-11-30"}
		},
		"GetPlan": func(tn string) proto.Message { return &billingv1.GetPlanRequest{TenantId: tn} },
		"SetPlan": func(tn string) proto.Message {
			return &billingv1.SetPlanRequest{Plan: &billingv1.Plan{TenantId: tn, Name: "starter",
				Limits: []*billingv1.PlanLimit{{Meter: "events_accepted", Limit: 1000, Hard: true, Period: "day"}}}}
		},
		"ListPlans": func(string) proto.Message { return &billingv1.ListPlansRequest{} },
	}
	type caller struct {
		name     string
		perms    []string
		token    string
		operator bool
	}
	var callers []caller
	for _, r := range rbac.Roles() {
		callers = append(callers, caller{string(r), r.Permissions(), e.token(t, own, r), !r.TenantScoped()})
	}
	for _, scopes := range [][]string{{rbac.UsageRead}, {rbac.BillingManage}, {rbac.UsageRead, rbac.BillingManage}, {rbac.CampaignsRead}} {
		callers = append(callers, caller{"api key " + strings.Join(scopes, "+"), scopes, e.keys.apiKey(own, scopes...), false})
	}
	callers = append(callers, caller{"anonymous", nil, "", false})

	allowed := 0
	for i := 0; i < usageService.Methods().Len(); i++ {
		md := usageService.Methods().Get(i)
		name := string(md.Name())
		build, ok := requests[name]
		if !ok {
			t.Errorf("%s has no request in the matrix", name)
			continue
		}
		rule, _ := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule)
		for _, c := range callers {
			for _, target := range []struct {
				name, tenant string
				foreign      bool
			}{{"own", own, false}, {"foreign", foreign, true}} {
				want := expectedCode(name, rule, c.perms, c.token != "", c.operator, target.foreign)
				if want == codes.OK {
					allowed++
				}
				ctx := context.Background()
				if c.token != "" {
					ctx = meshtest.Bearer(ctx, c.token)
				}
				err := e.conn.Invoke(ctx, "/campaignmesh.billing.v1.BillingService/"+name, build(target.tenant), newResponse(t, md))
				if got := status.Code(err); got != want {
					t.Errorf("%s as %s on the %s tenant: %v (%v), want %v", name, c.name, target.name, got, err, want)
				}
			}
		}
	}
	if allowed == 0 {
		t.Error("no call of the matrix was allowed: it proves denials only")
	}
}

func expectedCode(method string, rule *accessv1.Rule, perms []string, authenticated, operator, foreignTarget bool) codes.Code {
	req, ok := rule.GetRequirement().(*accessv1.Rule_Permission)
	switch {
	case !ok:
		return codes.Unknown // every BillingService RPC needs a permission
	case !authenticated:
		return codes.Unauthenticated
	case !slices.Contains(perms, req.Permission):
		return codes.PermissionDenied
	case req.Permission == rbac.BillingManage && !operator:
		return codes.PermissionDenied
	case foreignTarget && tenantTargeted[method] && !operator:
		return codes.NotFound
	}
	return codes.OK
}

// The access rules are the plan's: reads need usage.read, plan management billing.manage, and
// only the change (SetPlan) is audited.
func TestUsageAccessRules(t *testing.T) {
	t.Parallel()
	want := map[string]struct {
		perm  string
		audit bool
	}{"GetUsage": {rbac.UsageRead, false}, "GetPlan": {rbac.UsageRead, false}, "SetPlan": {rbac.BillingManage, true}, "ListPlans": {rbac.BillingManage, false}}
	for i := 0; i < usageService.Methods().Len(); i++ {
		md := usageService.Methods().Get(i)
		rule, _ := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule)
		w := want[string(md.Name())]
		if rule.GetPermission() != w.perm || rule.GetAudit() != w.audit {
			t.Errorf("%s: permission %q audit %v, want %q audit %v", md.Name(), rule.GetPermission(), rule.GetAudit(), w.perm, w.audit)
		}
	}
}

func newResponse(t *testing.T, md protoreflect.MethodDescriptor) proto.Message {
	t.Helper()
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		t.Fatal(err)
	}
	return mt.New().Interface()
}
