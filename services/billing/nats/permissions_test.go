package nats

import (
	"context"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/quota"
	"github.com/campaignmesh/campaignmesh/internal/platform/usage"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

// Under deploy/nats.conf's rights, as the processes connect: billing creates USAGE when it is
// first, consumes it through billing-usage (units analytics publishes) and publishes quotas
// that ingest reads; nothing it does is refused.
func TestBillingWorksWithItsNATSRights(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, users := natstest.StartSecured(t)
	_, billingJS, billingErrs := natstest.ConnectAs(t, srv.ClientURL(), users.Billing)
	_, analyticsJS, _ := natstest.ConnectAs(t, srv.ClientURL(), users.Analytics)
	_, ingestJS, _ := natstest.ConnectAs(t, srv.ClientURL(), users.Ingest)
	store := openStore(t)

	c := NewUsageConsumer(billingJS, store, ConsumerConfig{AckWait: time.Second}, quiet)
	ctx2, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx2) }()
	at := time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)
	meshtest.Eventually(t, 10*time.Second, func() bool {
		return usage.Publish(ctx, analyticsJS, usage.Unit{ID: "q-perm", Tenant: "t1", Meter: usage.MeterAnalyticsQueries, Units: 1, Time: at}) == nil
	}, "analytics publishes on the USAGE stream billing created")
	meshtest.Eventually(t, 20*time.Second, func() bool {
		return counted(ctx, t, store, billing.Day(at))["t1"][billing.AnalyticsQueries] == 1
	}, "billing counts the unit")
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	pub, err := OpenQuotaPublisher(ctx, billingJS)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.PublishQuotas(ctx, "t1", billing.Quotas{AsOf: at, Quotas: []billing.Quota{{Meter: billing.EventsAccepted, Limit: 5, Hard: true,
		Period: billing.PeriodDay, Used: 2, ResetsAt: at.Add(15 * time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	kv, err := ingestJS.KeyValue(ctx, quota.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, quota.Key("t1")); err != nil || len(e.Value()) == 0 {
		t.Fatalf("ingest reads billing's quotas: %v", err)
	}
	if err := pub.PublishQuotas(ctx, "t1", billing.Quotas{AsOf: at}); err != nil {
		t.Fatalf("remove the quotas: %v", err)
	}
	if errs := billingErrs(); len(errs) > 0 {
		t.Fatalf("billing's operations refused: %v", errs)
	}
}
