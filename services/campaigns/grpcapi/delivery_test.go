package grpcapi_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
)

// deliveryCampaignIn makes, in f's tenant, a campaign on ch in state with two variants.
func (e *env) deliveryCampaignIn(t *testing.T, f tenantFixture, ch campaigns.Channel, state campaigns.State) campaigns.Campaign {
	t.Helper()
	ctx := context.Background()
	c, err := e.svc.CreateCampaign(ctx, f.principal(), campaigns.Campaign{
		Name: "send", Channel: ch,
		Schedule: campaigns.Schedule{Start: mustWall(t, "2099-01-01T00:00"), TimeZone: "UTC"},
		Budget:   campaigns.Budget{TotalMicros: 1_000_000, Currency: "EUR"},
		Variants: []campaigns.Variant{{Name: "a", Weight: 70}, {Name: "b", Weight: 30}},
	})
	if err != nil {
		t.Fatal(err)
	}
	path := map[campaigns.State][]campaigns.Action{
		campaigns.Active: {campaigns.ActSchedule, campaigns.ActActivate},
		campaigns.Paused: {campaigns.ActSchedule, campaigns.ActActivate, campaigns.ActPause},
	}[state]
	for _, a := range path {
		if c, err = e.svc.Transition(ctx, f.principal(), c.ID, a, ""); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// ListDeliveryCampaigns answers the delivery service's identity only, across tenants: every
// active email and SMS campaign (not another channel's, not a paused or draft one), with its
// variants and activation time, paged; a tenant and ids narrow it.
func TestListDeliveryCampaigns(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	one, two := e.tenantWithRoles(t, "one"), e.tenantWithRoles(t, "two")
	want := map[string]campaigns.Campaign{}
	for _, f := range []tenantFixture{one, two} {
		for _, ch := range []campaigns.Channel{campaigns.ChannelEmail, campaigns.ChannelSMS} {
			c := e.deliveryCampaignIn(t, f, ch, campaigns.Active)
			want[c.ID] = c
		}
		e.deliveryCampaignIn(t, f, campaigns.ChannelEmail, campaigns.Paused)
		e.deliveryCampaignIn(t, f, campaigns.ChannelEmail, campaigns.Draft)
		e.campaignIn(t, f, campaigns.Active) // web
	}
	delivery := campaignsv1.NewCampaignServiceClient(dial(t, e.addr, e.ca, "delivery", "campaigns"))
	ctx := context.Background()

	got := map[string]*campaignsv1.ListDeliveryCampaignsResponse_DeliveryCampaign{}
	pages, token := 0, ""
	for {
		resp, err := delivery.ListDeliveryCampaigns(ctx, &campaignsv1.ListDeliveryCampaignsRequest{PageSize: 3, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, c := range resp.GetCampaigns() {
			if got[c.GetId()] != nil {
				t.Errorf("campaign %s listed twice", c.GetId())
			}
			got[c.GetId()] = c
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(got) != len(want) || pages < 2 {
		t.Fatalf("listed %d campaigns in %d pages, want %d over several", len(got), pages, len(want))
	}
	for id, w := range want {
		c := got[id]
		if c == nil || c.GetTenantId() != w.TenantID || c.GetState() != campaignsv1.Campaign_STATE_ACTIVE ||
			len(c.GetVariants()) != 2 || c.GetVariants()[0].GetWeight() != 70 || !c.GetStateTime().AsTime().Equal(w.StateTime) {
			t.Errorf("campaign %s: %v, want %+v", id, c, w)
		}
		if ch := c.GetChannel(); ch != campaignsv1.Channel_CHANNEL_EMAIL && ch != campaignsv1.Channel_CHANNEL_SMS {
			t.Errorf("campaign %s on %v", id, ch)
		}
	}

	// One tenant; some of its campaigns.
	resp, err := delivery.ListDeliveryCampaigns(ctx, &campaignsv1.ListDeliveryCampaignsRequest{TenantId: one.tenant.ID})
	if err != nil || len(resp.GetCampaigns()) != 2 {
		t.Fatalf("tenant one: %v %v", resp, err)
	}
	pick := resp.GetCampaigns()[0].GetId()
	resp, err = delivery.ListDeliveryCampaigns(ctx, &campaignsv1.ListDeliveryCampaignsRequest{TenantId: two.tenant.ID, CampaignIds: []string{pick}})
	if err != nil || len(resp.GetCampaigns()) != 0 {
		t.Fatalf("another tenant's id under tenant two: %v %v", resp, err)
	}
	resp, err = delivery.ListDeliveryCampaigns(ctx, &campaignsv1.ListDeliveryCampaignsRequest{TenantId: one.tenant.ID, CampaignIds: []string{pick}})
	if err != nil || len(resp.GetCampaigns()) != 1 || resp.GetCampaigns()[0].GetId() != pick {
		t.Fatalf("by id: %v %v", resp, err)
	}

	for name, req := range map[string]*campaignsv1.ListDeliveryCampaignsRequest{
		"ids without tenant": {CampaignIds: []string{pick}},
		"bad id":             {TenantId: one.tenant.ID, CampaignIds: []string{"x"}},
		"negative size":      {PageSize: -1},
		"forged token":       {PageToken: "eyJmIjoiIn0"},
		"token of a filter":  {TenantId: one.tenant.ID, PageToken: token2(t, delivery)},
	} {
		if _, err := delivery.ListDeliveryCampaigns(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", name, err)
		}
	}

	// Any other service, and the delivery service relaying a user's credential, are refused.
	for _, svc := range []string{"gateway", "ingest", "analytics", "dsr"} {
		c := campaignsv1.NewCampaignServiceClient(dial(t, e.addr, e.ca, svc, "campaigns"))
		if _, err := c.ListDeliveryCampaigns(ctx, &campaignsv1.ListDeliveryCampaignsRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("as %s: %v, want PERMISSION_DENIED", svc, err)
		}
	}
	if _, err := delivery.ListDeliveryCampaigns(as(one.tokens[rbac.Admin]), &campaignsv1.ListDeliveryCampaignsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("delivery relaying an admin's token: %v, want PERMISSION_DENIED", err)
	}
}

// token2 is a valid token of the unfiltered list (pages of 1).
func token2(t *testing.T, c campaignsv1.CampaignServiceClient) string {
	t.Helper()
	resp, err := c.ListDeliveryCampaigns(context.Background(), &campaignsv1.ListDeliveryCampaignsRequest{PageSize: 1})
	if err != nil || resp.GetNextPageToken() == "" {
		t.Fatalf("first page: %v %v", resp, err)
	}
	return resp.GetNextPageToken()
}
