package ingestclient_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/ingestclient"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
)

type pricing struct{ message, click delivery.Money }

func (p pricing) Costs(context.Context, string, string) (delivery.Money, delivery.Money, error) {
	return p.message, p.click, nil
}

// startIngest runs the real ingest service on a fresh JetStream and returns an event sink
// dialed to it over mTLS as the delivery service, and the stream.
func startIngest(t *testing.T) (*ingestclient.Client, jetstream.JetStream) {
	t.Helper()
	ns := natstest.StartServer(t)
	nc, js, err := natsjs.Connect(ns.ClientURL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	ca := mtlstest.NewCA(t)
	a := servicetest.StartIngest(t, servicetest.IngestOptions{CA: ca, NATS: ns,
		Verifier: authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": pub})}})
	c, conn, err := ingestclient.Dial(a.Addr(), mtlstest.Source(t, ca, "delivery"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return c, js
}

// storedEvents reads every event stored in the stream, with its tenant.
func storedEvents(t *testing.T, js jetstream.JetStream) []*ingestv1.AcceptedEvent {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, natsjs.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*ingestv1.AcceptedEvent
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		b, err := natsjs.DecodeBatch(msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b.GetEvents()...)
	}
	return out
}

// A click on a tracked link lands in the event stream, through the real ingest service, as a
// click event of the tenant, for the right campaign, variant and contact, worth the click cost.
func TestClickLandsInTheStream(t *testing.T) {
	sink, js := startIngest(t)
	ctx := context.Background()
	store, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	aud := delivery.NewAudiences(store, nil)
	c, err := aud.CreateContact(ctx, "tenant-7", delivery.Contact{Email: "bo@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.NewLedger(store.Pool()).AddRecipients(ctx, "tenant-7", "camp-1",
		[]delivery.Variant{{Name: "a", Weight: 1}, {Name: "b", Weight: 1}}, []delivery.NewRecipient{{ContactID: c.ID, Address: c.Email}}); err != nil {
		t.Fatal(err)
	}
	var id int64
	var variant string
	if err := store.Pool().QueryRow(ctx, `SELECT id, variant FROM ledger`).Scan(&id, &variant); err != nil {
		t.Fatal(err)
	}
	key := delivery.TrackingKey{Current: []byte(strings.Repeat("k", 32))}
	click := delivery.Money{Micros: 300000, Currency: "EUR"}
	tr := delivery.NewTracker(key, postgres.NewTracking(store.Pool()), aud, pricing{click: click}, sink, nil)
	link := delivery.TrackingLinks{BaseURL: "https://gw", Key: key}.Click(strconv.FormatInt(id, 10), "https://shop.example.com/x")
	out, err := tr.Click(ctx, strings.TrimPrefix(link, "https://gw/t/c/"), "UA/1", "203.0.113.9")
	if err != nil || !out.Recorded || out.Target != "https://shop.example.com/x" {
		t.Fatalf("click: %+v %v", out, err)
	}
	evs := storedEvents(t, js)
	if len(evs) != 1 {
		t.Fatalf("stream holds %d events, want the click", len(evs))
	}
	a, e := evs[0], evs[0].GetEvent()
	if a.GetTenantId() != "tenant-7" || e.GetType() != ingestv1.EventType_EVENT_TYPE_CLICK || e.GetCampaignId() != "camp-1" ||
		e.GetVariant() != variant || e.GetUserId() != c.ID || e.GetValue().GetAmountMicros() != 300000 || e.GetValue().GetCurrency() != "EUR" ||
		a.GetSource() != "service:delivery" {
		t.Errorf("stored click %v", a)
	}
}

// A publish retried with the same events (a redelivered webhook) stores them once.
func TestRepublishStoresOnce(t *testing.T) {
	sink, js := startIngest(t)
	ctx := context.Background()
	evs := []delivery.Event{
		{ID: "sendgrid:abc", Type: delivery.EventImpression, Name: delivery.EventNameDelivered, UserID: "c1", CampaignID: "camp",
			Variant: "a", Value: delivery.Money{Micros: 1000, Currency: "USD"}, Properties: map[string]string{"provider": "sendgrid"}},
		{ID: "sendgrid:def", Type: delivery.EventTrack, Name: delivery.EventNameBounced, UserID: "c1", CampaignID: "camp"},
	}
	for range 2 {
		if err := sink.Publish(ctx, "tenant-7", evs); err != nil {
			t.Fatal(err)
		}
	}
	if got := storedEvents(t, js); len(got) != 2 {
		t.Fatalf("stream holds %d events, want 2: %v", len(got), got)
	}
	// An event ingest refuses is an error, not a silent loss.
	if err := sink.Publish(ctx, "tenant-7", []delivery.Event{{ID: "x", Type: delivery.EventTrack, Name: "n"}}); err == nil {
		t.Error("an event without a subject was published")
	}
}
