package grpcapi_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// A plan change is audited once, with the change (the record is in the outbox in the change's
// transaction); a refused one (a tenant's admin, a stale etag) is audited as refused; reads are
// not audited. The etag of an answer makes the next change conditional.
func TestPlanChangesAreAudited(t *testing.T) {
	t.Parallel()
	e := newUsageEnv(t)
	client := billingv1.NewBillingServiceClient(e.conn)
	op := meshtest.Bearer(context.Background(), e.token(t, "", rbac.PlatformOperator))
	admin := meshtest.Bearer(context.Background(), e.token(t, "t1", rbac.Admin))
	plan := &billingv1.Plan{TenantId: "t1", Name: "starter", Limits: []*billingv1.PlanLimit{{Meter: "messages_sms", Limit: 100, Hard: true, Period: "month"}}}

	p, err := client.SetPlan(op, &billingv1.SetPlanRequest{Plan: plan})
	if err != nil || p.GetEtag() != "r1" || p.GetUpdatedBy() == "" {
		t.Fatalf("set: %v %v", p, err)
	}
	stale := proto.Clone(plan).(*billingv1.Plan)
	stale.Etag = "r1"
	if _, err := client.SetPlan(op, &billingv1.SetPlanRequest{Plan: stale}); err != nil { // r1 is current: r2 now
		t.Fatal(err)
	}
	if _, err := client.SetPlan(op, &billingv1.SetPlanRequest{Plan: stale}); status.Code(err) != codes.Aborted {
		t.Fatalf("stale etag: %v, want ABORTED", err)
	}
	if _, err := client.SetPlan(admin, &billingv1.SetPlanRequest{Plan: plan}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("tenant admin: %v, want PERMISSION_DENIED", err)
	}
	if got, err := client.GetPlan(admin, &billingv1.GetPlanRequest{}); err != nil || got.GetEtag() != "r2" || len(got.GetLimits()) != 1 {
		t.Fatalf("tenant admin reads its plan: %v %v", got, err)
	}

	rows, err := e.b.Store().Pool().Query(context.Background(), `SELECT record FROM audit_outbox ORDER BY create_time`)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*authv1.AuditRecord, error) {
		var b []byte
		if err := r.Scan(&b); err != nil {
			return nil, err
		}
		var rec authv1.AuditRecord
		return &rec, proto.Unmarshal(b, &rec)
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.GetMethod()+" "+r.GetResource()+" "+r.GetOutcome()+" "+r.GetTenantId())
	}
	const m = "/campaignmesh.billing.v1.BillingService/SetPlan"
	want := []string{m + " plans/t1 OK ", m + " plans/t1 OK ", m + "  ABORTED ", m + "  PERMISSION_DENIED t1"}
	if len(got) != len(want) {
		t.Fatalf("audit records:\n%q\nwant\n%q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("record %d: %q, want %q", i, got[i], want[i])
		}
	}
}
