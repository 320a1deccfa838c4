package authclient_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/auth"
	authapp "github.com/campaignmesh/campaignmesh/services/auth/app"
	"github.com/campaignmesh/campaignmesh/services/billing"
	"github.com/campaignmesh/campaignmesh/services/billing/authclient"
	"github.com/campaignmesh/campaignmesh/services/billing/postgres"
	"github.com/campaignmesh/campaignmesh/services/billing/stripe"
)

// A payment fails, the grace period passes, the real auth service suspends the tenant (its
// users can no longer log in), and further passes do nothing; a paid invoice before the end of
// the grace period would have cleared the flag (the domain tests show it).
func TestGraceSuspendsThroughAuth(t *testing.T) {
	a := servicetest.StartAuth(t, servicetest.AuthOptions{})
	tn := a.NewTenant(t, "unpaid")
	other := a.NewTenant(t, "paying")

	ctx := context.Background()
	store, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	op := &authn.Principal{Subject: "op", Role: rbac.PlatformOperator, Permissions: rbac.PlatformOperator.Permissions()}
	accounts := billing.NewAccounts(store, nil)
	for tenant, cus := range map[string]string{tn.Tenant.ID: "cus_unpaid", other.Tenant.ID: "cus_paying"} {
		if _, err := accounts.SetBillingAccount(ctx, op, tenant, cus); err != nil {
			t.Fatal(err)
		}
	}

	now := time.Now()
	secret := []byte("whsec_grace")
	v, err := stripe.NewVerifier(secret, stripe.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	hooks := billing.NewWebhooks(v, store, nil)
	deliver := func(id, typ, customer string, created time.Time) {
		t.Helper()
		body := []byte(fmt.Sprintf(`{"id":%q,"type":%q,"created":%d,"data":{"object":{"id":"in_%s","object":"invoice","customer":%q,"attempt_count":1}}}`,
			id, typ, created.Unix(), id, customer))
		if err := hooks.HandleStripeWebhook(ctx, body, stripe.Sign(secret, body, now)); err != nil {
			t.Fatalf("deliver %s: %v", id, err)
		}
	}
	deliver("evt_1", billing.StripeInvoicePaymentFailed, "cus_unpaid", now.Add(-2*time.Hour))
	deliver("evt_2", billing.StripeInvoicePaymentFailed, "cus_paying", now.Add(-2*time.Hour))
	deliver("evt_3", billing.StripeInvoicePaid, "cus_paying", now.Add(-time.Hour))

	client := authclient.New(servicetest.Dial(t, a.Addr(), a.CA, "billing", authapp.ServiceName))
	g, err := billing.NewGrace(store, client, billing.WithGracePeriod(90*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := g.Pass(ctx); err != nil || n != 1 {
		t.Fatalf("pass: n=%d err=%v", n, err)
	}
	got, err := a.Service().GetTenant(ctx, tn.Tenant.ID)
	if err != nil || got.State != auth.TenantSuspended {
		t.Fatalf("tenant after the grace period: %+v, %v", got, err)
	}
	if paying, _ := a.Service().GetTenant(ctx, other.Tenant.ID); paying.State == auth.TenantSuspended {
		t.Fatal("a tenant whose invoice was paid was suspended")
	}
	acc, err := store.GetBillingAccount(ctx, tn.Tenant.ID)
	if err != nil || acc.Status != billing.AccountSuspended {
		t.Fatalf("account: %+v, %v", acc, err)
	}
	if n, err := g.Pass(ctx); err != nil || n != 0 {
		t.Fatalf("repeat pass: n=%d err=%v", n, err)
	}
}

// Billing's audit records (the operator's account changes, the webhooks', the grace job's)
// leave its outbox for auth's log: auth accepts them from billing (method billing.*, actor
// service:billing or an operator, the platform's chain).
func TestBillingAuditRecordsReachAuth(t *testing.T) {
	a := servicetest.StartAuth(t, servicetest.AuthOptions{})
	tn := a.NewTenant(t, "audited")
	ctx := context.Background()
	store, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	if _, err := billing.NewAccounts(store, nil).SetBillingAccount(ctx, &authn.Principal{Subject: "op", Role: rbac.PlatformOperator, Permissions: rbac.PlatformOperator.Permissions()}, tn.Tenant.ID, "cus_audited"); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	secret := []byte("whsec_audit")
	v, err := stripe.NewVerifier(secret)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(fmt.Sprintf(`{"id":"evt_a","type":"invoice.payment_failed","created":%d,"data":{"object":{"id":"in_a","customer":"cus_audited"}}}`, now.Add(-3*time.Hour).Unix()))
	if err := billing.NewWebhooks(v, store, nil).HandleStripeWebhook(ctx, body, stripe.Sign(secret, body, now)); err != nil {
		t.Fatal(err)
	}
	conn := servicetest.Dial(t, a.Addr(), a.CA, "billing", authapp.ServiceName)
	g, err := billing.NewGrace(store, authclient.New(conn), billing.WithGracePeriod(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := g.Pass(ctx); err != nil || n != 1 {
		t.Fatalf("pass: %d %v", n, err)
	}
	outbox, err := auditpg.NewOutbox(ctx, store.Pool(), authv1.NewAuthServiceClient(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := outbox.Flush(ctx); err != nil || n != 2 {
		t.Fatalf("flush: %d records, %v (want the webhook's and the grace job's)", n, err)
	}
	for _, method := range []string{billing.AuditMethodStripeWebhook, billing.AuditMethodGraceSuspend} {
		es, _, err := a.Service().ListAuditRecords(ctx, &authn.Principal{}, auth.AuditFilter{Method: method}, 10, "")
		if err != nil || len(es) != 1 || es[0].Actor != "service:billing" || es[0].Service != "billing" {
			t.Errorf("%s in auth's platform chain: %+v, %v", method, es, err)
		}
	}
}
