package app_test

import (
	"context"
	"testing"
	"time"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
)

// With the real auth service, the delivery service's calls to auth's internal RPCs are
// admitted under its own mesh identity: an API key is verified (VerifyApiKey, ListRevocations)
// and an audited change reaches auth's audit log (AppendAuditRecords). Auth refuses mesh
// identities its callers rules do not name, so a delivery the rules forgot could neither take
// API keys nor empty its audit outbox.
func TestAuthAdmitsDelivery(t *testing.T) {
	t.Parallel()
	a := servicetest.StartAuth(t, servicetest.AuthOptions{})
	d := servicetest.StartDelivery(t, servicetest.DeliveryOptions{CA: a.CA, AuthAddr: a.Addr()})
	tn := a.NewTenant(t, "delivery-auth")
	admin := &authn.Principal{TenantID: tn.Tenant.ID, Subject: tn.Admin.ID, Permissions: rbac.Admin.Permissions()}
	_, secret, err := a.Service().CreateAPIKey(context.Background(), admin, "contacts", []string{rbac.ContactsRead, rbac.ContactsWrite}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := d.Client(t, "gateway")
	created, err := client.CreateContact(meshtest.Bearer(ctx, secret), &deliveryv1.CreateContactRequest{
		Contact: &deliveryv1.Contact{Email: "ada@example.com"}})
	if err != nil {
		t.Fatalf("create a contact with an API key: %v", err)
	}
	meshtest.Eventually(t, 15*time.Second, func() bool {
		n, err := d.Outbox().Pending(ctx)
		return err == nil && n == 0
	}, "the delivery service's audit record never reached auth")
	records, err := a.Client(t, "gateway").ListAuditRecords(meshtest.Bearer(ctx, tn.Token), &authv1.ListAuditRecordsRequest{
		Method: deliveryv1.DeliveryService_CreateContact_FullMethodName})
	if err != nil {
		t.Fatal(err)
	}
	if len(records.GetRecords()) != 1 || records.GetRecords()[0].GetResource() != created.GetId() {
		t.Fatalf("auth's audit log holds %v, want the one CreateContact of %s", records.GetRecords(), created.GetId())
	}
}
