package grpcapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
)

// IngestTenantEvents takes a tenant's events from the delivery service only (by its mesh
// identity, with no user credential), through IngestEvents' validation, dedup and ack; any other
// mesh identity, with or without a user's token, is refused.
func TestIngestTenantEventsOnlyFromDelivery(t *testing.T) {
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
	clientAs := func(service string) ingestv1.IngestServiceClient {
		conn, err := grpc.NewClient(a.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(mtlstest.Source(t, ca, service).ClientConfig("ingest"))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return ingestv1.NewIngestServiceClient(conn)
	}
	ctx := context.Background()
	req := &ingestv1.IngestTenantEventsRequest{TenantId: "tenant-9", Batch: 3, Events: []*ingestv1.Event{
		{EventId: "click:1:ab", Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: "contact-1", CampaignId: "c1", Variant: "a",
			Value: &ingestv1.Money{AmountMicros: 250000, Currency: "USD"}},
		{EventId: "bad", Type: ingestv1.EventType_EVENT_TYPE_CLICK}, // no subject: rejected, like IngestEvents
	}}
	delivery := clientAs("delivery")
	resp, err := delivery.IngestTenantEvents(ctx, req)
	if err != nil || resp.GetAccepted() != 1 || len(resp.GetRejected()) != 1 || resp.GetRejected()[0].GetIndex() != 1 || resp.GetBatch() != 3 {
		t.Fatalf("IngestTenantEvents = %v, %v", resp, err)
	}
	s, _ := js.Stream(ctx, natsjs.StreamName)
	msg, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := natsjs.DecodeBatch(msg.Data)
	if err != nil || len(b.GetEvents()) != 1 || b.GetEvents()[0].GetTenantId() != "tenant-9" || b.GetEvents()[0].GetSource() != "service:delivery" ||
		msg.Subject != natsjs.Subject("tenant-9", natsjs.Partition("tenant-9", "contact-1")) {
		t.Fatalf("stored batch: %v on %s (%v)", b.GetEvents(), msg.Subject, err)
	}
	// A retry of the same events is deduplicated.
	if _, err := delivery.IngestTenantEvents(ctx, req); err != nil {
		t.Fatal(err)
	}
	if n := streamMessages(t, js); n != 1 {
		t.Fatalf("stream holds %d batches after a retry, want 1", n)
	}
	if _, err := delivery.IngestTenantEvents(ctx, &ingestv1.IngestTenantEventsRequest{Events: req.Events}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("no tenant: %v", err)
	}
	for _, other := range []string{"gateway", "campaigns", "analytics", "dsr"} {
		if _, err := clientAs(other).IngestTenantEvents(ctx, req); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v, want PermissionDenied", other, err)
		}
	}
}
