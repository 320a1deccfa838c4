package campaignsclient_test

import (
	"context"
	"testing"

	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/campaignsclient"
)

// The client lists the real campaigns service's active email and SMS campaigns of every
// tenant over mTLS with the delivery identity; a pause takes a campaign out of the list, a
// resume brings it back with a new activation time.
func TestListActiveFromCampaigns(t *testing.T) {
	t.Parallel()
	svc := servicetest.StartCampaigns(t, servicetest.CampaignsOptions{})
	ctx := context.Background()
	newCampaign := func(tenantID string, ch campaigns.Channel, actions ...campaigns.Action) campaigns.Campaign {
		t.Helper()
		p := &authn.Principal{TenantID: tenantID, Subject: "u", Role: rbac.Manager, Permissions: rbac.Manager.Permissions()}
		wall, _ := campaigns.ParseWallClock("2099-01-01T00:00")
		c, err := svc.Service().CreateCampaign(ctx, p, campaigns.Campaign{Name: "n", Channel: ch,
			Schedule: campaigns.Schedule{Start: wall, TimeZone: "UTC"}, Budget: campaigns.Budget{TotalMicros: 1, Currency: "EUR"},
			Variants: []campaigns.Variant{{Name: "a", Weight: 70}, {Name: "b", Weight: 30}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range actions {
			if c, err = svc.Service().Transition(ctx, p, c.ID, a, ""); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	run := []campaigns.Action{campaigns.ActSchedule, campaigns.ActActivate}
	email := newCampaign("t1", campaigns.ChannelEmail, run...)
	sms := newCampaign("t2", campaigns.ChannelSMS, run...)
	newCampaign("t1", campaigns.ChannelPush, run...)
	newCampaign("t1", campaigns.ChannelEmail)

	client, conn, err := campaignsclient.Dial(svc.Addr(), mtlstest.Source(t, svc.CA, "delivery"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	list := func() map[string]delivery.ActiveCampaign {
		t.Helper()
		got, err := client.ListActive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]delivery.ActiveCampaign{}
		for _, c := range got {
			m[c.ID] = c
		}
		return m
	}
	got := list()
	if len(got) != 2 {
		t.Fatalf("listed %v, want the active email and SMS campaigns", got)
	}
	if e := got[email.ID]; e.TenantID != "t1" || e.Channel != delivery.ChannelEmail || len(e.Variants) != 2 ||
		e.Variants[0] != (delivery.Variant{Name: "a", Weight: 70}) || !e.StateTime.Equal(email.StateTime) {
		t.Errorf("email campaign: %+v", e)
	}
	if s := got[sms.ID]; s.TenantID != "t2" || s.Channel != delivery.ChannelSMS {
		t.Errorf("sms campaign: %+v", s)
	}

	p := &authn.Principal{TenantID: "t1", Subject: "u", Role: rbac.Manager, Permissions: rbac.Manager.Permissions()}
	if _, err := svc.Service().Transition(ctx, p, email.ID, campaigns.ActPause, ""); err != nil {
		t.Fatal(err)
	}
	if _, ok := list()[email.ID]; ok {
		t.Error("paused campaign still listed")
	}
	if _, err := svc.Service().Transition(ctx, p, email.ID, campaigns.ActResume, ""); err != nil {
		t.Fatal(err)
	}
	if e, ok := list()[email.ID]; !ok || !e.StateTime.After(email.StateTime) {
		t.Errorf("resumed campaign: %+v %v, want a later activation than %s", e, ok, email.StateTime)
	}

	// Another identity is refused: the list fails rather than coming back empty.
	other, conn2, err := campaignsclient.Dial(svc.Addr(), mtlstest.Source(t, svc.CA, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn2.Close() })
	if _, err := other.ListActive(ctx); err == nil {
		t.Error("listed as the gateway")
	}
}
