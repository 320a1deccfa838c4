package postgres_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

var (
	operator = &authn.Principal{Subject: "op", Role: rbac.PlatformOperator}
	adminT1  = &authn.Principal{TenantID: "t1", Subject: "u1", Role: rbac.Admin}
)

func TestSetPlanIsAuditedWithTheChangeAndChecksTheRevision(t *testing.T) {
	s, ctx := MustOpen(t), context.Background()
	svc := billing.NewService(s, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	audited := func() context.Context {
		return audit.Begin(ctx, func() audit.Record {
			return audit.Record{Method: "/campaignmesh.billing.v1.BillingService/SetPlan", Actor: "op", Outcome: codes.OK, Service: "billing"}
		})
	}
	records := func() int {
		var n int
		if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM audit_outbox`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	plan := billing.Plan{TenantID: "t1", Name: " starter ", Limits: []billing.Limit{{Meter: billing.EventsAccepted, Limit: 1000, Hard: true, Period: billing.PeriodDay}}}
	p, err := svc.SetPlan(audited(), operator, plan, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.Revision != 1 || p.Name != "starter" || p.UpdatedBy != "op" || len(p.Limits) != 1 || records() != 1 {
		t.Fatalf("plan %+v, %d audit records", p, records())
	}
	if _, err := svc.SetPlan(audited(), operator, plan, 1); err != nil {
		t.Fatal(err)
	}
	_, err = svc.SetPlan(audited(), operator, plan, 1) // revision 2 now
	if !apperr.HasCode(err, apperr.Conflict) {
		t.Fatalf("stale revision: %v, want ABORTED", err)
	}
	_, err = svc.SetPlan(audited(), operator, billing.Plan{TenantID: "t2"}, 3)
	if !apperr.HasCode(err, apperr.NotFound) {
		t.Fatalf("revision of a plan that does not exist: %v, want NOT_FOUND", err)
	}
	_, err = svc.SetPlan(audited(), operator, billing.Plan{TenantID: "t1", Limits: []billing.Limit{{Meter: billing.StorageBytes, Hard: true, Period: billing.PeriodDay}}}, 0)
	if !apperr.HasCode(err, apperr.Invalid) {
		t.Fatalf("hard storage limit: %v, want INVALID_ARGUMENT", err)
	}
	if n := records(); n != 2 { // refused changes are the access layer's to record, not the store's
		t.Fatalf("%d audit records, want 2 (one per change made)", n)
	}
	got, err := svc.GetPlan(ctx, adminT1, "")
	if err != nil || got.Revision != 2 {
		t.Fatalf("tenant admin reads its plan: %+v %v", got, err)
	}
	if _, err := svc.GetPlan(ctx, adminT1, "t2"); !apperr.HasCode(err, apperr.NotFound) {
		t.Fatalf("another tenant's plan: %v, want NOT_FOUND", err)
	}
	if none, err := svc.GetPlan(ctx, operator, "t9"); err != nil || none.Revision != 0 || len(none.Limits) != 0 {
		t.Fatalf("a tenant without a plan: %+v %v, want no limits", none, err)
	}
	if _, err := svc.GetPlan(ctx, operator, ""); !apperr.HasCode(err, apperr.Invalid) {
		t.Fatalf("operator without a tenant: %v, want INVALID_ARGUMENT", err)
	}
}

func TestListPlansPages(t *testing.T) {
	s, ctx := MustOpen(t), context.Background()
	svc := billing.NewService(s, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, tenant := range []string{"a", "b", "c"} {
		if _, err := s.PutPlan(ctx, billing.Plan{TenantID: tenant}, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	token := ""
	for range 3 {
		ps, next, err := svc.ListPlans(ctx, operator, 2, token)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			got = append(got, p.TenantID)
		}
		if token = next; token == "" {
			break
		}
	}
	if len(got) != 3 || got[0] != "a" || got[2] != "c" {
		t.Fatalf("pages: %v", got)
	}
}

func TestGetUsageIsScopedToTheCallersTenant(t *testing.T) {
	s, ctx := MustOpen(t), context.Background()
	svc := billing.NewService(s, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d := day("2026-11-29")
	for _, tenant := range []string{"t1", "t2"} {
		if err := s.SaveUsage(ctx, d, []billing.Usage{{TenantID: tenant, Day: d, Meter: billing.EventsAccepted, Value: 5},
			{TenantID: tenant, Day: d, Meter: billing.ContactsStored, Value: 2}}, false); err != nil {
			t.Fatal(err)
		}
	}
	tenantsOf := func(rows []billing.Usage) map[string]int {
		out := map[string]int{}
		for _, r := range rows {
			out[r.TenantID]++
		}
		return out
	}
	rows, totals, err := svc.GetUsage(ctx, adminT1, "", "2026-11-29", "2026-11-29", nil)
	if err != nil || len(tenantsOf(rows)) != 1 || tenantsOf(rows)["t1"] != 2 || len(totals) != 2 {
		t.Fatalf("tenant admin: %v %v %v", rows, totals, err)
	}
	if _, _, err := svc.GetUsage(ctx, adminT1, "t2", "2026-11-29", "2026-11-29", nil); !apperr.HasCode(err, apperr.NotFound) {
		t.Fatalf("another tenant's usage: %v, want NOT_FOUND", err)
	}
	rows, _, err = svc.GetUsage(ctx, operator, "", "2026-11-29", "2026-11-29", []string{"events_accepted"})
	if err != nil || len(rows) != 2 || len(tenantsOf(rows)) != 2 {
		t.Fatalf("operator, every tenant: %v %v", rows, err)
	}
	rows, _, err = svc.GetUsage(ctx, operator, "t2", "2026-11-29", "2026-11-29", nil)
	if err != nil || tenantsOf(rows)["t2"] != 2 || len(tenantsOf(rows)) != 1 {
		t.Fatalf("operator, one tenant: %v %v", rows, err)
	}
}
