package grpcapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/ingest"
	"github.com/campaignmesh/campaignmesh/services/ingest/app"
)

type env struct {
	client   ingestv1.IngestServiceClient
	js       jetstream.JetStream
	token    func(role string) string
	stopNATS func()
}

func newEnv(t *testing.T, rates ingest.RateLimits, stream natsjs.StreamConfig) *env {
	t.Helper()
	ns := natstest.StartServer(t)
	nc, js, err := natsjs.Connect(ns.ClientURL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	ca := mtlstest.NewCA(t)
	a := servicetest.StartIngest(t, servicetest.IngestOptions{
		CA: ca, NATS: ns,
		Verifier: authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": pub})},
		Config:   func(c *app.Config) { c.Rates, c.Stream = rates, stream },
	})
	conn, err := grpc.NewClient(a.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(mtlstest.Source(t, ca, "gateway").ClientConfig("ingest"))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &env{client: ingestv1.NewIngestServiceClient(conn), js: js, stopNATS: ns.Shutdown, token: func(role string) string {
		now := time.Now()
		tok, err := authn.Sign(authn.Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: authn.Issuer, Audience: jwt.ClaimStrings{authn.Audience},
			Subject: "user-1", IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))}, TenantID: "tenant-1", Role: role}, "k", priv)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}}
}

func as(tok string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

func events(ids ...string) []*ingestv1.Event {
	out := make([]*ingestv1.Event, len(ids))
	for i, id := range ids {
		out[i] = &ingestv1.Event{EventId: id, Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: "u"}
	}
	return out
}

func streamMessages(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	return natstest.StreamMsgs(t, js, natsjs.StreamName)
}

func TestIngestStoresAcceptedEventsBeforeAnswering(t *testing.T) {
	e := newEnv(t, ingest.DefaultRateLimits, natsjs.DefaultStream)
	manager := as(e.token("manager"))
	evs := append(events("a", "b"), &ingestv1.Event{EventId: "c", Type: ingestv1.EventType_EVENT_TYPE_CLICK})
	resp, err := e.client.IngestEvents(manager, &ingestv1.IngestEventsRequest{Events: evs, Batch: 7})
	if err != nil || resp.GetAccepted() != 2 || len(resp.GetRejected()) != 1 || resp.GetRejected()[0].GetIndex() != 2 || resp.GetBatch() != 7 {
		t.Fatalf("IngestEvents = %v, %v", resp, err)
	}
	// The answer came after the store: the batch is in the stream, with the tenant from the token.
	s, _ := e.js.Stream(context.Background(), natsjs.StreamName)
	msg, err := s.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := natsjs.DecodeBatch(msg.Data)
	if err != nil || len(b.GetEvents()) != 2 || b.GetEvents()[0].GetTenantId() != "tenant-1" || msg.Subject != natsjs.Subject("tenant-1", natsjs.Partition("tenant-1", "u")) {
		t.Fatalf("stored batch: %v on %s (%v)", b.GetEvents(), msg.Subject, err)
	}
	// The same batch again is a duplicate the stream drops.
	if _, err := e.client.IngestEvents(manager, &ingestv1.IngestEventsRequest{Events: evs}); err != nil {
		t.Fatal(err)
	}
	if n := streamMessages(t, e.js); n != 1 {
		t.Fatalf("stream holds %d batches after a retry, want 1", n)
	}
	// Without events.write: refused.
	if _, err := e.client.IngestEvents(as(e.token("viewer")), &ingestv1.IngestEventsRequest{Events: events("x")}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("viewer: %v", err)
	}
	// A batch over the limit is refused whole.
	many := make([]string, 1001)
	for i := range many {
		many[i] = "m" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
	}
	if _, err := e.client.IngestEvents(manager, &ingestv1.IngestEventsRequest{Events: events(many...)}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("1,001 events: %v", err)
	}
}

func TestStreamEventsAcknowledgesEachBatchInOrder(t *testing.T) {
	e := newEnv(t, ingest.DefaultRateLimits, natsjs.DefaultStream)
	stream, err := e.client.StreamEvents(as(e.token("admin")))
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(1); i <= 3; i++ {
		if err := stream.Send(&ingestv1.StreamEventsRequest{Batch: i, Events: events("s"+string(rune('0'+i)), "t"+string(rune('0'+i)))}); err != nil {
			t.Fatal(err)
		}
	}
	for i := int64(1); i <= 3; i++ {
		ack, err := stream.Recv()
		if err != nil || ack.GetBatch() != i || ack.GetAccepted() != 2 {
			t.Fatalf("ack %d = %v, %v", i, ack, err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if n := streamMessages(t, e.js); n != 3 {
		t.Fatalf("stream holds %d batches, want 3", n)
	}
}

func TestBackpressure(t *testing.T) {
	rates := ingest.RateLimits{PerTenant: 1000, PerSource: 1000}
	small := natsjs.DefaultStream
	small.MaxBytes = 1 << 20
	e := newEnv(t, rates, small)
	admin := as(e.token("admin"))
	// Rate limit: the burst (2 s worth) passes, then RESOURCE_EXHAUSTED with a retry delay.
	var err error
	for i := 0; i < 10 && err == nil; i++ {
		ids := make([]string, 500)
		for j := range ids {
			ids[j] = "r" + string(rune('a'+i)) + "-" + string(rune('a'+j%26)) + string(rune('a'+j/26))
		}
		_, err = e.client.IngestEvents(admin, &ingestv1.IngestEventsRequest{Events: events(ids...)})
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("over the rate limit: %v", err)
	}
	// NATS down: UNAVAILABLE, never an ack.
	e.stopNATS()
	_, err = e.client.IngestEvents(as(e.token("manager")), &ingestv1.IngestEventsRequest{Events: events("late")})
	if c := status.Code(err); c != codes.Unavailable {
		t.Fatalf("with NATS down: %v, want Unavailable", err)
	}
}

func TestStreamFullIsRefusedAndNothingIsAckedThatWasNotStored(t *testing.T) {
	tiny := natsjs.DefaultStream
	tiny.MaxBytes = 64 << 10
	e := newEnv(t, ingest.RateLimits{PerTenant: 1e9, PerSource: 1e9}, tiny)
	admin := as(e.token("admin"))
	var acked uint64
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		ids := make([]string, 100)
		for j := range ids {
			ids[j] = fmt.Sprintf("full-%d-%d", i, j)
		}
		_, err = e.client.IngestEvents(admin, &ingestv1.IngestEventsRequest{Events: events(ids...)})
		if err == nil {
			acked++
		}
	}
	st, _ := status.FromError(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "full") {
		t.Fatalf("with the stream full: %v, want RESOURCE_EXHAUSTED naming the full stream", err)
	}
	if acked == 0 {
		t.Fatal("no batch fitted before the stream was full")
	}
	if n := streamMessages(t, e.js); n != acked {
		t.Fatalf("stream holds %d batches, %d were acknowledged", n, acked)
	}
}
