package grpcapi_test

import (
	"context"
	"testing"
	"time"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/quota"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/app"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
)

// With NATS, delivery follows billing's QUOTAS bucket: a campaign whose pending recipients a
// hard quota of its channel holds says so in GetCampaignDelivery, with the quota and its reset;
// deleting the tenant's quotas clears it.
func TestCampaignDeliveryNamesTheQuotaThatHoldsIt(t *testing.T) {
	t.Parallel()
	ns := natstest.StartServer(t)
	nc, js, err := natsjs.Connect(ns.ClientURL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := context.Background()
	kv, err := quota.OpenBucket(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	issuer := meshtest.NewIssuer(t)
	keys := &keyring{jwt: issuer.Verifier()}
	d := servicetest.StartDelivery(t, servicetest.DeliveryOptions{Verifier: keys, Config: func(c *app.Config) {
		c.NATS, c.Hasher = natsjs.ClientFlags{URL: ns.ClientURL()}, servicetest.NewPrivacyHasher(t)
	}})
	e := &env{d: d, aud: d.Audiences(), issuer: issuer, keys: keys}
	const tenant = "tenant-q"
	campaign := e.ledgerIn(t, tenant, 3) // one sent, one pending, one skipped
	if ok, err := postgres.NewDispatch(d.Store().Pool()).TakeCampaign(ctx,
		delivery.CampaignRef{TenantID: tenant, CampaignID: campaign, Channel: delivery.ChannelEmail}, "driver", time.Now().Add(time.Minute)); err != nil || !ok {
		t.Fatalf("take campaign: %v %v", ok, err)
	}
	now := time.Now()
	resets := quota.PeriodEnd(quota.Day, now)
	if err := quota.Publish(ctx, kv, tenant, quota.Snapshot{AsOf: now, Quotas: []quota.Quota{
		{Meter: quota.MessagesEmail, Limit: 1000, Hard: true, Period: quota.Day, Used: 1000, ResetsAt: resets}}}); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 10*time.Second, func() bool { _, ok := d.Quotas().Snapshot(tenant); return ok }, "delivery did not apply the quotas")
	client := deliveryv1.NewSendingServiceClient(servicetest.Dial(t, d.Addr(), d.CA, "gateway", "delivery"))
	viewer := meshtest.Bearer(ctx, e.token(t, tenant, rbac.Viewer))
	got, err := client.GetCampaignDelivery(viewer, &deliveryv1.GetCampaignDeliveryRequest{CampaignId: campaign})
	if err != nil {
		t.Fatal(err)
	}
	h := got.GetQuotaHold()
	if h.GetQuota() != "messages_email" || h.GetLimit() != 1000 || h.GetUsed() != 1000 || h.GetPeriod() != "day" || !h.GetResetsAt().AsTime().Equal(resets) ||
		got.GetCounts().GetPending() != 1 {
		t.Fatalf("delivery %v", got)
	}
	if err := quota.Delete(ctx, kv, tenant); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 10*time.Second, func() bool { _, ok := d.Quotas().Snapshot(tenant); return !ok }, "delivery kept deleted quotas")
	if got, err := client.GetCampaignDelivery(viewer, &deliveryv1.GetCampaignDeliveryRequest{CampaignId: campaign}); err != nil || got.GetQuotaHold() != nil {
		t.Fatalf("without quotas: %v %v", got, err)
	}
}
