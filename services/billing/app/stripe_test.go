package app_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/platform/usage"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	stripestandin "github.com/campaignmesh/campaignmesh/internal/standin/stripe"
	"github.com/campaignmesh/campaignmesh/services/billing/app"
)

func secretFile(t *testing.T, name, value string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The Stripe side as cmd/billing wires it: an operator maps the tenant to a customer, its
// accepted events are metered and reach the Stripe stand-in as meter events, and a webhook
// with a bad signature is refused while a signed one is taken.
func TestUsageReachesStripeAndWebhooksAreVerified(t *testing.T) {
	t.Parallel()
	const apiKey, whsec = "sk_test_app", "whsec_app"
	const tenant = "6f1d3a52-7c1e-4c3e-9a51-2b7f0e8d4c11"
	stand, err := stripestandin.New(stripestandin.Config{APIKey: apiKey, WebhookSecret: whsec})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(stand)
	t.Cleanup(func() { srv.Close(); stand.Close() })
	issuer := meshtest.NewIssuer(t)
	b := servicetest.StartBilling(t, servicetest.BillingOptions{Verifier: issuer.Verifier(), Config: func(c *app.Config) {
		c.Metering.Interval = 200 * time.Millisecond
		c.Stripe.URL, c.Stripe.ReportInterval = srv.URL, time.Second
		c.Stripe.APIKeyFile, c.Stripe.WebhookSecretFile = secretFile(t, "key", apiKey), secretFile(t, "whsec", whsec)
	}})
	conn := servicetest.Dial(t, b.Addr(), b.CA, "gateway", "billing")
	accounts := billingv1.NewBillingAccountServiceClient(conn)
	op := meshtest.Bearer(context.Background(), issuer.Token(t, "", rbac.PlatformOperator, "op"))
	if _, err := accounts.SetBillingAccount(op, &billingv1.SetBillingAccountRequest{TenantId: tenant, StripeCustomerId: "cus_app1"}); err != nil {
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
	now := time.Now().UTC()
	if err := usage.PublishAll(context.Background(), js, []usage.Unit{{ID: fmt.Sprint("ea-1-", now.Format("20060102")), Tenant: tenant,
		Meter: usage.MeterEventsAccepted, Units: 7, Time: now}}); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 30*time.Second, func() bool { return stand.Total("cm_events_accepted", "cus_app1") == 7 },
		"the stand-in's total of cm_events_accepted for cus_app1: %d", stand.Total("cm_events_accepted", "cus_app1"))

	body := []byte(`{"id":"evt_app_1","type":"invoice.paid","created":` + fmt.Sprint(now.Unix()) + `,"data":{"object":{"customer":"cus_app1"}}}`)
	_, err = accounts.HandleStripeWebhook(context.Background(), &billingv1.HandleStripeWebhookRequest{Payload: body,
		Signature: stripestandin.Sign("whsec_other", body, now)})
	if c := status.Code(err); c != codes.InvalidArgument && c != codes.Unauthenticated && c != codes.PermissionDenied {
		t.Fatalf("a webhook signed with another secret: %v, want it refused", err)
	}
	if _, err := accounts.HandleStripeWebhook(context.Background(), &billingv1.HandleStripeWebhookRequest{Payload: body,
		Signature: stripestandin.Sign(whsec, body, now)}); err != nil {
		t.Fatalf("a signed webhook: %v", err)
	}
}
