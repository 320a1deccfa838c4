package grpcapi_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/status"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
)

// When the delivery database goes away, reads and writes answer UNAVAILABLE with retry info
// through the real chain (no driver text reaches the client), logged at warn.
func TestDatabaseOutageAnswersUnavailable(t *testing.T) {
	proxy, dbURL := pgtest.NewProxy(t, pgtest.NewDatabase(t))
	logs := &meshtest.LogBuffer{}
	keys := &keyring{jwt: meshtest.NewIssuer(t).Verifier()}
	e := &env{keys: keys}
	svc := servicetest.StartDelivery(t, servicetest.DeliveryOptions{Database: dbURL, Verifier: keys,
		Logger: telemetry.NewLogger(logs, "delivery", slog.LevelDebug)})
	client := svc.Client(t, "gateway")
	m := meshtest.Bearer(context.Background(), e.apiKey("t1", contactsRead, contactsWrite, messagesSend))
	messages := deliveryv1.NewMessagesServiceClient(servicetest.Dial(t, svc.Addr(), svc.CA, "gateway", "delivery"))
	c, err := client.CreateContact(m, &deliveryv1.CreateContactRequest{Contact: newContact()})
	if err != nil {
		t.Fatalf("before the outage: %v", err)
	}

	proxy.Cut()
	for what, call := range map[string]func() error{
		"GetContact": func() error {
			_, err := client.GetContact(m, &deliveryv1.GetContactRequest{Id: c.GetId()})
			return err
		},
		"ListContacts": func() error { _, err := client.ListContacts(m, &deliveryv1.ListContactsRequest{}); return err },
		"CreateContact": func() error {
			_, err := client.CreateContact(m, &deliveryv1.CreateContactRequest{Contact: newContact()})
			return err
		},
		"ListSegments": func() error { _, err := client.ListSegments(m, &deliveryv1.ListSegmentsRequest{}); return err },
		"GetCampaignContent": func() error {
			_, err := messages.GetCampaignContent(m, &deliveryv1.GetCampaignContentRequest{CampaignId: newCampaignID()})
			return err
		},
		"ListSenderIdentities": func() error {
			_, err := messages.ListSenderIdentities(m, &deliveryv1.ListSenderIdentitiesRequest{})
			return err
		},
		"CreateSenderIdentity": func() error {
			_, err := messages.CreateSenderIdentity(m, &deliveryv1.CreateSenderIdentityRequest{SenderIdentity: &deliveryv1.SenderIdentity{
				Channel: deliveryv1.Channel_CHANNEL_EMAIL, FromEmail: "news@shop.example"}})
			return err
		},
		"CreateSegment": func() error {
			_, err := client.CreateSegment(m, &deliveryv1.CreateSegmentRequest{Segment: newSegment()})
			return err
		},
	} {
		meshtest.RequireStoreUnavailable(t, what, status.Convert(call()))
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"msg":"internal error"`) {
			t.Errorf("logged as an internal error: %s", l)
		}
		if strings.Contains(l, `"grpc.code":"Unavailable"`) && !strings.Contains(l, `"level":"WARN"`) {
			t.Errorf("not at warn: %s", l)
		}
	}
}
