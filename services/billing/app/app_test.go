package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/platform/usage"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/billing"
	"github.com/campaignmesh/campaignmesh/services/billing/app"
)

// The service as cmd/billing builds it: an operator sets a plan, the analytics writer records
// accepted events as units on USAGE, and the tenant's admin sees the day's events_accepted
// through the API while the QUOTAS bucket holds the plan's quota with the same usage.
func TestAcceptedEventsReachTheAPIAndTheQuotas(t *testing.T) {
	t.Parallel()
	issuer := meshtest.NewIssuer(t)
	b := servicetest.StartBilling(t, servicetest.BillingOptions{Verifier: issuer.Verifier(), Config: func(c *app.Config) {
		c.Metering.Interval = 200 * time.Millisecond
	}})
	client := b.Client(t, "gateway")
	op := meshtest.Bearer(context.Background(), issuer.Token(t, "", rbac.PlatformOperator, "op"))
	admin := meshtest.Bearer(context.Background(), issuer.Token(t, "t1", rbac.Admin, "a1"))
	if _, err := client.SetPlan(op, &billingv1.SetPlanRequest{Plan: &billingv1.Plan{TenantId: "t1", Name: "starter",
		Limits: []*billingv1.PlanLimit{{Meter: "events_accepted", Limit: 10, Hard: true, Period: "day"}}}}); err != nil {
		t.Fatal(err)
	}

	nc, js, err := natsjs.Connect(b.NATSURL, "writer")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := usage.EnsureStream(context.Background(), js); err != nil {
		t.Fatal(err)
	}
	// The writer's units of three batches of 4 events, one of them published twice (a retry).
	now := time.Now().UTC()
	var units []usage.Unit
	for i := range 3 {
		units = append(units, usage.Unit{ID: fmt.Sprintf("ea-%d-%s", i+1, now.Format("20060102")), Tenant: "t1",
			Meter: usage.MeterEventsAccepted, Units: 4, Time: now})
	}
	if err := usage.PublishAll(context.Background(), js, append(units, units[0])); err != nil {
		t.Fatal(err)
	}

	today := now.Format(billing.DayLayout)
	var got *billingv1.GetUsageResponse
	meshtest.Eventually(t, 30*time.Second, func() bool {
		got, err = client.GetUsage(admin, &billingv1.GetUsageRequest{StartDay: today, EndDay: today})
		return err == nil && len(got.GetTotals()) == 1 && got.GetTotals()[0].GetValue() == 12
	}, "usage of t1 today: %v %v", got, err)

	kv, err := js.KeyValue(context.Background(), "QUOTAS")
	if err != nil {
		t.Fatal(err)
	}
	var snap struct {
		Quotas []struct {
			Meter string `json:"meter"`
			Used  int64  `json:"used"`
			Limit int64  `json:"limit"`
			Hard  bool   `json:"hard"`
		} `json:"quotas"`
	}
	meshtest.Eventually(t, 10*time.Second, func() bool {
		e, err := kv.Get(context.Background(), "quota.t1")
		return err == nil && json.Unmarshal(e.Value(), &snap) == nil && len(snap.Quotas) == 1 && snap.Quotas[0].Used == 12
	}, "quota.t1: %+v", snap)
	if q := snap.Quotas[0]; q.Meter != "events_accepted" || q.Limit != 10 || !q.Hard {
		t.Fatalf("quota %+v", q)
	}
}
