package app_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/app"
	ingestapp "github.com/campaignmesh/campaignmesh/services/ingest/app"
)

// natsUser is a NATS user's client settings, its password in a file as the services read it.
func natsUser(t *testing.T, url string, u natstest.User) natsjs.ClientFlags {
	t.Helper()
	file := filepath.Join(t.TempDir(), "nats-"+u.Name)
	if err := os.WriteFile(file, []byte(u.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return natsjs.ClientFlags{URL: url, User: u.Name, PasswordFile: file}
}

// Identify events reach delivery's contacts end to end: the real ingest and the real delivery
// on a NATS server with the real deploy/nats.conf, each as its own user. An identify sent
// through ingest creates the contact with its traits; the same request sent again (a client's
// retry) is stored once in the identify stream and changes nothing; the identify of a subject
// dsr suppressed is not copied and makes no contact; a Segment group call's traits (an identify
// event with segment_type group) do not become the user's.
func TestIdentifyEventsThroughIngestMakeContacts(t *testing.T) {
	t.Parallel()
	srv, users := natstest.StartSecured(t)
	url := srv.ClientURL()
	ctx := context.Background()
	hasher := servicetest.NewPrivacyHasher(t)
	issuer := meshtest.NewIssuer(t)
	ca := mtlstest.NewCA(t)

	ingest := servicetest.StartIngest(t, servicetest.IngestOptions{CA: ca, NATS: srv, Hasher: hasher, Verifier: issuer.Verifier(),
		Config: func(c *ingestapp.Config) { c.NATS = natsUser(t, url, users.Ingest) }})
	d := servicetest.StartDelivery(t, servicetest.DeliveryOptions{CA: ca, Config: func(c *app.Config) {
		c.NATS = natsUser(t, url, users.Delivery)
		c.Hasher = hasher
	}})

	// dsr suppresses a subject of t1; ingest follows it before the request.
	_, dsrJS, _ := natstest.ConnectAs(t, url, users.DSR)
	kv, err := privacy.OpenBucket(ctx, dsrJS)
	if err != nil {
		t.Fatal(err)
	}
	gone := hasher.SubjectHash("t1", "user-gone")
	if err := privacy.PutSuppression(ctx, kv, "t1", gone, "dsr_1"); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 10*time.Second, func() bool { return ingest.Privacy().Suppressed("t1", gone) }, "ingest did not follow the suppression")

	conn, err := grpc.NewClient(ingest.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(mtlstest.Source(t, ca, "gateway").ClientConfig(ingestapp.ServiceName))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := ingestv1.NewIngestServiceClient(conn)
	as := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+issuer.Token(t, "t1", rbac.Manager, "user-1"))
	identify := func(id, user string, traits map[string]any) *ingestv1.Event {
		props, err := structpb.NewStruct(traits)
		if err != nil {
			t.Fatal(err)
		}
		return &ingestv1.Event{EventId: id, Type: ingestv1.EventType_EVENT_TYPE_IDENTIFY, UserId: user, Properties: props}
	}
	req := &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{
		identify("e1", "user-ann", map[string]any{"email": "Ann@Example.com", "first_name": "Ann"}),
		{EventId: "e2", Type: ingestv1.EventType_EVENT_TYPE_TRACK, Name: "signup", UserId: "user-ann"},
		identify("e3", "user-gone", map[string]any{"email": "gone@example.com", "first_name": "Gone"}),
		// A Segment group call as the gateway maps it: the group's traits, not the user's.
		identify("e4", "user-ann", map[string]any{"segment_type": "group", "group_id": "acme", "traits.email": "billing@acme.example", "traits.name": "Acme"}),
	}}
	resp, err := client.IngestEvents(as, req)
	if err != nil || resp.GetAccepted() != 3 || resp.GetSuppressed() != 1 {
		t.Fatalf("IngestEvents = %+v, %v; want 3 accepted, 1 suppressed", resp, err)
	}

	aud := d.Audiences()
	find := func(ids ...delivery.Identifier) []delivery.Contact {
		cs, err := aud.ExportContact(ctx, "t1", ids)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	byUser := func(u string) []delivery.Contact {
		return find(delivery.Identifier{Kind: delivery.IdentifierUserID, Value: u})
	}
	meshtest.Eventually(t, 20*time.Second, func() bool { return len(byUser("user-ann")) == 1 }, "the identify event made no contact")
	ann := byUser("user-ann")[0]
	if ann.Email != "ann@example.com" || ann.Attributes["first_name"] != "Ann" || ann.Consent.Email.State != delivery.ConsentUnknown {
		t.Errorf("the contact: %+v", ann)
	}
	// The suppressed subject's identify was in the same request, and so would have been in
	// the same message as user-ann's.
	if cs := append(byUser("user-gone"), find(delivery.Identifier{Kind: delivery.IdentifierEmail, Value: "gone@example.com"})...); len(cs) != 0 {
		t.Errorf("the suppressed subject has a contact: %+v", cs)
	}

	// The client retries the request: the copy is a duplicate the identify stream drops.
	if resp, err := client.IngestEvents(as, req); err != nil || resp.GetAccepted() != 3 {
		t.Fatalf("the retried request: %+v, %v", resp, err)
	}
	_, adminJS, _ := natstest.ConnectAs(t, url, users.Admin)
	if n := natstest.StreamMsgs(t, adminJS, natsjs.IdentifyStream); n != 1 {
		t.Errorf("the identify stream holds %d messages after a retried request, want 1", n)
	}
	cons, err := adminJS.Consumer(ctx, natsjs.IdentifyStream, natsjs.IdentifyConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 10*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream == 1
	}, "the identify message was not acknowledged")
	if again := byUser("user-ann"); len(again) != 1 || again[0].Revision != ann.Revision {
		t.Errorf("after the retry: %+v, want the contact unchanged (revision %d)", again, ann.Revision)
	}
	if n, err := aud.CountSegment(ctx, "t1", "", &delivery.Filter{}); err != nil || n.Contacts != 1 {
		t.Errorf("t1 has %+v contacts (%v), want 1", n, err)
	}
}
