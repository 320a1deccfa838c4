package grpcapi_test

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/campaignmesh/campaignmesh/gateway"
	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
)

var serviceDesc = campaignsv1.File_campaignmesh_campaigns_v1_service_proto.Services().ByName("CampaignService")

// tenantTargeted are the RPCs that name a campaign: on another tenant's campaign they must
// answer NOT_FOUND, exactly as for a campaign that does not exist.
var tenantTargeted = map[string]bool{
	"GetCampaign": true, "UpdateCampaign": true, "DeleteCampaign": true, "ScheduleCampaign": true,
	"ActivateCampaign": true, "PauseCampaign": true, "ResumeCampaign": true, "CompleteCampaign": true,
	"CancelCampaign": true, "ArchiveCampaign": true, "ListCampaignTransitions": true, "GetCampaignPacing": true,
}

// The tenant isolation and authorization matrix: every RPC of CampaignService × every role of
// a tenant (admin, manager, analyst, viewer), an API key with campaigns.read, the platform
// operator and no credential × a campaign of the caller's own or of another tenant, over gRPC
// and over REST through the real gateway — each call asserting the exact code. The expected
// code comes from the RPC's access rule and the role table, so a handler that authorizes
// differently from its declared rule, or leaks across tenants, fails here. Every call gets a
// fresh target in the state its RPC needs, so an allowed call succeeds.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	op := e.operatorToken(t)
	own, foreign := e.tenantWithRoles(t, "own"), e.tenantWithRoles(t, "foreign")
	var n int
	unique := func() string { n++; return fmt.Sprint("m", n) }

	// requests build a harmless, valid request for each RPC against a campaign of f.
	requests := map[string]func(f tenantFixture) proto.Message{
		"CreateCampaign": func(tenantFixture) proto.Message {
			return &campaignsv1.CreateCampaignRequest{Campaign: newDraft("c " + unique())}
		},
		"GetCampaign": func(f tenantFixture) proto.Message {
			return &campaignsv1.GetCampaignRequest{Id: e.campaignIn(t, f, campaigns.Draft).ID}
		},
		"ListCampaigns": func(tenantFixture) proto.Message { return &campaignsv1.ListCampaignsRequest{} },
		"UpdateCampaign": func(f tenantFixture) proto.Message {
			return &campaignsv1.UpdateCampaignRequest{Campaign: &campaignsv1.Campaign{Id: e.campaignIn(t, f, campaigns.Draft).ID, Name: "renamed"},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}}
		},
		"DeleteCampaign": func(f tenantFixture) proto.Message {
			return &campaignsv1.DeleteCampaignRequest{Id: e.campaignIn(t, f, campaigns.Draft).ID}
		},
		"ScheduleCampaign": func(f tenantFixture) proto.Message {
			return &campaignsv1.ScheduleCampaignRequest{Id: e.campaignIn(t, f, campaigns.Draft).ID}
		},
		"ActivateCampaign": func(f tenantFixture) proto.Message {
			return &campaignsv1.ActivateCampaignRequest{Id: e.campaignIn(t, f, campaigns.Scheduled).ID}
		},
		"PauseCampaign": func(f tenantFixture) proto.Message {
			return &campaignsv1.PauseCampaignRequest{Id: e.campaignIn(t, f, campaigns.Active).ID}
		},
		"ResumeCampaign": func(f tenantFixture) proto.Message {
			return &campaignsv1.ResumeCampaignRequest{Id: e.campaignIn(t, f, campaigns.Paused).ID}
		},
		"CompleteCampaign": func(f tenantFixture) proto.Message {
			return &campaignsv1.CompleteCampaignRequest{Id: e.campaignIn(t, f, campaigns.Active).ID}
		},
		"CancelCampaign": func(f tenantFixture) proto.Message {
			return &campaignsv1.CancelCampaignRequest{Id: e.campaignIn(t, f, campaigns.Scheduled).ID}
		},
		"ArchiveCampaign": func(f tenantFixture) proto.Message {
			return &campaignsv1.ArchiveCampaignRequest{Id: e.campaignIn(t, f, campaigns.Draft).ID}
		},
		"ListCampaignTransitions": func(f tenantFixture) proto.Message {
			return &campaignsv1.ListCampaignTransitionsRequest{Id: e.campaignIn(t, f, campaigns.Active).ID}
		},
		"GetCampaignPacing": func(f tenantFixture) proto.Message {
			return &campaignsv1.GetCampaignPacingRequest{Id: e.campaignIn(t, f, campaigns.Active).ID}
		},
		"ListDeliveryCampaigns": func(f tenantFixture) proto.Message {
			return &campaignsv1.ListDeliveryCampaignsRequest{TenantId: f.tenant.ID}
		},
	}
	callers := []struct {
		name  string
		perms func(string) bool
		token string
	}{
		{"admin", rbac.Admin.Has, own.tokens[rbac.Admin]},
		{"manager", rbac.Manager.Has, own.tokens[rbac.Manager]},
		{"analyst", rbac.Analyst.Has, own.tokens[rbac.Analyst]},
		{"viewer", rbac.Viewer.Has, own.tokens[rbac.Viewer]},
		{"privacy officer", rbac.PrivacyOfficer.Has, own.tokens[rbac.PrivacyOfficer]},
		{"api key (campaigns.read)", func(p string) bool { return p == rbac.CampaignsRead }, own.apiKey},
		{"platform operator", rbac.PlatformOperator.Has, op},
		{"anonymous", nil, ""},
	}
	rest := newRESTClient(t, e)
	transports := map[string]func(method string, req proto.Message, token string) codes.Code{
		"grpc": func(method string, req proto.Message, token string) codes.Code {
			ctx := context.Background()
			if token != "" {
				ctx = as(token)
			}
			return status.Code(e.conn.Invoke(ctx, "/campaignmesh.campaigns.v1.CampaignService/"+method, req, newResponse(t, method)))
		},
		"rest": rest.Call,
	}
	for i := 0; i < serviceDesc.Methods().Len(); i++ {
		md := serviceDesc.Methods().Get(i)
		name := string(md.Name())
		build, ok := requests[name]
		if !ok {
			t.Errorf("%s has no request in the matrix", name)
			continue
		}
		rule, _ := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule)
		for _, c := range callers {
			for _, target := range []struct {
				name    string
				f       tenantFixture
				foreign bool
			}{{"own", own, false}, {"foreign", foreign, true}} {
				want := expectedCode(name, rule, c.perms, c.token != "", target.foreign)
				for tname, call := range transports {
					if tname == "rest" && rule.GetCallers() != nil {
						continue // internal: no REST route at all
					}
					if got := call(name, build(target.f), c.token); got != want {
						t.Errorf("%s as %s on a campaign of the %s tenant over %s: %v, want %v", name, c.name, target.name, tname, got, want)
					}
				}
			}
		}
	}
}

func expectedCode(method string, rule *accessv1.Rule, has func(string) bool, authenticated, foreignTarget bool) codes.Code {
	if rule.GetCallers() != nil {
		return codes.PermissionDenied // internal: users come through the gateway, not an allowed service
	}
	req, ok := rule.GetRequirement().(*accessv1.Rule_Permission)
	switch {
	case !ok:
		return codes.Unknown // every other CampaignService RPC needs a permission
	case !authenticated:
		return codes.Unauthenticated
	case !has(req.Permission):
		return codes.PermissionDenied
	case foreignTarget && tenantTargeted[method]:
		return codes.NotFound
	}
	return codes.OK
}

// Lists never show another tenant's campaigns, to any role.
func TestListsAreTenantScoped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	own, foreign := e.tenantWithRoles(t, "mine"), e.tenantWithRoles(t, "theirs")
	mine := e.campaignIn(t, own, campaigns.Active)
	e.campaignIn(t, foreign, campaigns.Active)
	for _, token := range []string{own.tokens[rbac.Admin], own.tokens[rbac.Viewer], own.apiKey} {
		resp, err := e.client.ListCampaigns(as(token), &campaignsv1.ListCampaignsRequest{})
		if err != nil || len(resp.GetCampaigns()) != 1 || resp.GetCampaigns()[0].GetId() != mine.ID {
			t.Fatalf("list: %v %v; want only the own tenant's campaign", resp, err)
		}
	}
	// The tenant comes from the credential only: metadata naming another tenant changes nothing.
	ctx := metadata.AppendToOutgoingContext(as(own.tokens[rbac.Admin]), "x-tenant-id", foreign.tenant.ID)
	if resp, err := e.client.ListCampaigns(ctx, &campaignsv1.ListCampaignsRequest{}); err != nil || len(resp.GetCampaigns()) != 1 || resp.GetCampaigns()[0].GetId() != mine.ID {
		t.Fatalf("list with a foreign tenant in the metadata: %v %v", resp, err)
	}
}

func newResponse(t *testing.T, method string) proto.Message {
	t.Helper()
	md := serviceDesc.Methods().ByName(protoreflect.Name(method))
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		t.Fatal(err)
	}
	return mt.New().Interface()
}

// newRESTClient serves the campaigns API through the real gateway handler (servicetest.REST).
func newRESTClient(t *testing.T, e *env) *servicetest.REST {
	return servicetest.NewREST(t, serviceDesc, gateway.Backend{Package: "campaignmesh.campaigns.v1", Conn: e.conn, RegisterREST: campaignsv1.RegisterCampaignServiceHandler})
}
