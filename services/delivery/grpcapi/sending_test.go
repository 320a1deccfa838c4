package grpcapi_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/campaignmesh/campaignmesh/gateway"
	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
)

var sendingDesc = deliveryv1.File_campaignmesh_delivery_v1_sending_proto.Services().ByName("SendingService")

// ledgerIn gives a new campaign of tenant a ledger of n recipients (variants a/b), the first
// one sent, and returns the campaign id.
func (e *env) ledgerIn(t *testing.T, tenant string, n int) string {
	t.Helper()
	id := uuid.NewString()
	rs := make([]delivery.NewRecipient, n)
	for i := range rs {
		rs[i] = delivery.NewRecipient{ContactID: fmt.Sprintf("contact-%d", i), Address: fmt.Sprintf("p%d@example.com", i)}
	}
	rs[n-1].Skip = string(delivery.SkipNoConsent)
	l := postgres.NewLedger(e.d.Store().Pool())
	if _, err := l.AddRecipients(context.Background(), tenant, id, []delivery.Variant{{Name: "a", Weight: 50}, {Name: "b", Weight: 50}}, rs); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.Store().Pool().Exec(context.Background(),
		`UPDATE ledger SET state = 'sent', attempt = 1, provider_id = 'sg-1' WHERE campaign_id = $1 AND contact_id = 'contact-0'`, id); err != nil {
		t.Fatal(err)
	}
	return id
}

// The authorization matrix of SendingService: every RPC × every role, API keys with
// campaigns.read, contacts.read or neither, and no credential, over gRPC and REST. Progress
// needs campaigns.read, the recipient list (contact ids) contacts.read; a credential without
// a tenant is refused. Another tenant's campaign shows nothing (zero counts, no recipient).
func TestSendingAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	own, foreign := "tenant-own", "tenant-foreign"
	ownCampaign, foreignCampaign := e.ledgerIn(t, own, 3), e.ledgerIn(t, foreign, 3)
	requests := map[string]func(campaignID string) proto.Message{
		"GetCampaignDelivery":    func(id string) proto.Message { return &deliveryv1.GetCampaignDeliveryRequest{CampaignId: id} },
		"ListCampaignRecipients": func(id string) proto.Message { return &deliveryv1.ListCampaignRecipientsRequest{CampaignId: id} },
	}
	type caller struct {
		name     string
		perms    []string
		token    string
		noTenant bool
	}
	var callers []caller
	for _, r := range rbac.Roles() {
		callers = append(callers, caller{string(r), r.Permissions(), e.token(t, own, r), !r.TenantScoped()})
	}
	for _, scopes := range [][]string{{rbac.CampaignsRead}, {contactsRead}, {contactsWrite}} {
		callers = append(callers, caller{"api key " + strings.Join(scopes, "+"), scopes, e.apiKey(own, scopes...), false})
	}
	callers = append(callers, caller{"anonymous", nil, "", false})
	conn := servicetest.Dial(t, e.d.Addr(), e.d.CA, "gateway", "delivery")
	rest := servicetest.NewREST(t, sendingDesc, gateway.Backend{Package: "campaignmesh.delivery.v1", Conn: conn,
		RegisterREST: deliveryv1.RegisterSendingServiceHandler})
	client := deliveryv1.NewSendingServiceClient(conn)
	transports := map[string]func(method string, req proto.Message, token string) codes.Code{
		"grpc": func(method string, req proto.Message, token string) codes.Code {
			ctx := context.Background()
			if token != "" {
				ctx = meshtest.Bearer(ctx, token)
			}
			var resp proto.Message = &deliveryv1.CampaignDelivery{}
			if method == "ListCampaignRecipients" {
				resp = &deliveryv1.ListCampaignRecipientsResponse{}
			}
			return status.Code(conn.Invoke(ctx, "/campaignmesh.delivery.v1.SendingService/"+method, req, resp))
		},
		"rest": rest.Call,
	}
	allowed := 0
	for i := 0; i < sendingDesc.Methods().Len(); i++ {
		name := string(sendingDesc.Methods().Get(i).Name())
		rule, _ := proto.GetExtension(sendingDesc.Methods().Get(i).Options(), accessv1.E_Rule).(*accessv1.Rule)
		want := map[string]string{"GetCampaignDelivery": rbac.CampaignsRead, "ListCampaignRecipients": contactsRead}[name]
		if rule.GetPermission() != want || rule.GetAudit() {
			t.Errorf("%s: rule %v, want permission %s", name, rule, want)
		}
		for _, c := range callers {
			code := codes.OK
			switch {
			case c.token == "":
				code = codes.Unauthenticated
			case !slices.Contains(c.perms, want), c.noTenant:
				code = codes.PermissionDenied
			}
			if code == codes.OK {
				allowed++
			}
			for tname, call := range transports {
				if got := call(name, requests[name](ownCampaign), c.token); got != code {
					t.Errorf("%s as %s over %s: %v, want %v", name, c.name, tname, got, code)
				}
			}
		}
	}
	if allowed == 0 {
		t.Error("no call of the matrix was allowed")
	}

	// What an allowed caller sees: its own campaign's figures, nothing of another tenant's.
	admin := meshtest.Bearer(context.Background(), e.token(t, own, rbac.Admin))
	d, err := client.GetCampaignDelivery(admin, &deliveryv1.GetCampaignDeliveryRequest{CampaignId: ownCampaign})
	if err != nil || d.GetCounts().GetTotal() != 3 || d.GetCounts().GetSent() != 1 || d.GetCounts().GetSkipped() != 1 ||
		d.GetCounts().GetPending() != 1 || d.GetStartTime() == nil || d.GetFinishTime() != nil || len(d.GetVariants()) == 0 {
		t.Errorf("own campaign: %v %v", d, err)
	}
	d, err = client.GetCampaignDelivery(admin, &deliveryv1.GetCampaignDeliveryRequest{CampaignId: foreignCampaign})
	if err != nil || d.GetCounts().GetTotal() != 0 || d.GetStartTime() != nil {
		t.Errorf("another tenant's campaign: %v %v", d, err)
	}
	var seen []string
	token := ""
	for {
		page, err := client.ListCampaignRecipients(admin, &deliveryv1.ListCampaignRecipientsRequest{CampaignId: ownCampaign, PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.GetRecipients() {
			seen = append(seen, r.GetContactId())
			if r.GetContactId() == "contact-0" && (r.GetState() != deliveryv1.RecipientState_RECIPIENT_STATE_SENT || r.GetAttempts() != 1 || r.GetProviderMessageId() != "sg-1") {
				t.Errorf("sent recipient: %v", r)
			}
			if strings.Contains(fmt.Sprint(r), "@") {
				t.Errorf("recipient shows an address: %v", r)
			}
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(seen) != 3 {
		t.Errorf("listed %v, want the 3 recipients over pages of 2", seen)
	}
	if page, err := client.ListCampaignRecipients(admin, &deliveryv1.ListCampaignRecipientsRequest{CampaignId: foreignCampaign}); err != nil || len(page.GetRecipients()) != 0 {
		t.Errorf("another tenant's recipients: %v %v", page, err)
	}
	for _, req := range []*deliveryv1.ListCampaignRecipientsRequest{{CampaignId: "x"}, {CampaignId: ownCampaign, PageToken: "abc"}, {CampaignId: ownCampaign, PageSize: -1}} {
		if _, err := client.ListCampaignRecipients(admin, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: %v, want INVALID_ARGUMENT", req, err)
		}
	}
}
