package nats_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/app"
)

func identify(tenant, id, user string, traits map[string]any) *ingestv1.AcceptedEvent {
	props, err := structpb.NewStruct(traits)
	if err != nil {
		panic(err)
	}
	now := timestamppb.Now()
	return &ingestv1.AcceptedEvent{TenantId: tenant, ReceivedAt: now, Event: &ingestv1.Event{EventId: id,
		Type: ingestv1.EventType_EVENT_TYPE_IDENTIFY, UserId: user, Properties: props, Timestamp: now}}
}

// The real delivery service reads identify batches from the identify stream with its durable
// consumer and upserts contacts: traits set the fields, consent changes only on an explicit
// trait, a bad event is refused without blocking the rest, a redelivered batch changes
// nothing, and every message ends acknowledged.
func TestIdentifyEventsMakeContacts(t *testing.T) {
	t.Parallel()
	url := natstest.Start(t)
	hasher, err := privacy.NewHasher([]byte(strings.Repeat("k", privacy.MinKeyBytes)))
	if err != nil {
		t.Fatal(err)
	}
	d := servicetest.StartDelivery(t, servicetest.DeliveryOptions{Config: func(c *app.Config) {
		c.NATS = natsjs.ClientFlags{URL: url}
		c.Hasher = hasher
	}})
	nc, js, err := natsjs.Connect(url, "ingest-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := context.Background()
	if err := natsjs.EnsureIdentifyStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	publish := func(tenant, msgID string, events ...*ingestv1.AcceptedEvent) {
		t.Helper()
		data, err := natsjs.EncodeBatch(events)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, natsjs.IdentifySubjectPrefix+tenant, data); err != nil {
			t.Fatal(err)
		}
	}
	publish("t1", "m1",
		identify("t1", "e1", "user-1", map[string]any{"traits.email": "Ann@Example.com", "traits.first_name": "Ann", "traits.plan": "pro"}),
		identify("t1", "e2", "user-2", map[string]any{"email": "not an email"}), // refused, the rest goes on
		identify("t1", "e3", "", map[string]any{"email": "anon@example.com"}),   // no user id: skipped
		&ingestv1.AcceptedEvent{TenantId: "t1", Event: &ingestv1.Event{EventId: "e4", Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: "user-3"}},
		identify("t1", "e5", "user-4", map[string]any{"phone": "+14155550100", "consent.sms": "granted", "timezone": "Europe/Paris"}),
	)
	aud := d.Audiences()
	find := func(user string) (delivery.Contact, bool) {
		cs, err := aud.ExportContact(ctx, "t1", []delivery.Identifier{{Kind: delivery.IdentifierUserID, Value: user}})
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 1 {
			return delivery.Contact{}, false
		}
		return cs[0], true
	}
	meshtest.Eventually(t, 15*time.Second, func() bool { _, ok := find("user-4"); return ok }, "the identify batch was not applied")
	ann, _ := find("user-1")
	if ann.Email != "ann@example.com" || ann.Attributes["first_name"] != "Ann" || ann.Attributes["plan"] != "" || ann.Consent.Email.State != delivery.ConsentUnknown {
		t.Errorf("user-1: %+v", ann)
	}
	u4, _ := find("user-4")
	if u4.Phone != "+14155550100" || u4.TimeZone != "Europe/Paris" || u4.Consent.SMS.State != delivery.ConsentGranted || u4.Consent.SMS.Source != delivery.ConsentIdentifySource {
		t.Errorf("user-4: %+v", u4)
	}
	for _, u := range []string{"user-2", "user-3"} {
		if _, ok := find(u); ok {
			t.Errorf("%s has a contact", u)
		}
	}
	// The same batch again (a redelivery): nothing changes.
	publish("t1", "m1-again", identify("t1", "e1", "user-1", map[string]any{"traits.email": "Ann@Example.com", "traits.first_name": "Ann"}))
	publish("t2", "m2", identify("t2", "e6", "user-1", map[string]any{"email": "other@example.com"}))
	meshtest.Eventually(t, 15*time.Second, func() bool {
		cs, err := aud.ExportContact(ctx, "t2", []delivery.Identifier{{Kind: delivery.IdentifierUserID, Value: "user-1"}})
		return err == nil && len(cs) == 1
	}, "the other tenant's identify was not applied")
	if again, _ := find("user-1"); again.Revision != ann.Revision {
		t.Errorf("a repeated identify changed the contact: revision %d → %d", ann.Revision, again.Revision)
	}
	cons, err := js.Consumer(ctx, natsjs.IdentifyStream, natsjs.IdentifyConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 15*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream == 3
	}, "messages left unacknowledged")
}
