package grpcapi_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/campaignmesh/campaignmesh/gateway"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/ingest/app"
)

// privacyEnv is ingest on a real JetStream server with the privacy bucket it watches, as dsr
// writes it, and tokens of two tenants.
type privacyEnv struct {
	ingest  *app.App
	client  ingestv1.IngestServiceClient
	js      jetstream.JetStream
	nc      *nats.Conn // the admin's (an unsecured server)
	kv      jetstream.KeyValue
	hasher  *privacy.Hasher
	ca      *mtls.CA
	tokenOf func(tenant string) string // a manager's
	tokenAs func(tenant, role string) string
}

func newPrivacyEnv(t *testing.T) *privacyEnv {
	t.Helper()
	return newPrivacyEnvOn(t, natstest.StartServer(t))
}

func newPrivacyEnvOn(t *testing.T, ns *server.Server, config ...func(*app.Config)) *privacyEnv {
	t.Helper()
	nc, js, err := natsjs.Connect(ns.ClientURL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	e := &privacyEnv{js: js, nc: nc, hasher: servicetest.NewPrivacyHasher(t), ca: mtlstest.NewCA(t)}
	e.ingest = servicetest.StartIngest(t, servicetest.IngestOptions{
		CA: e.ca, NATS: ns, Hasher: e.hasher,
		Verifier: authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": pub}), Keys: writeKeys{}},
		Config: func(c *app.Config) {
			for _, f := range config {
				f(c)
			}
		},
	})
	if e.kv, err = privacy.OpenBucket(context.Background(), js); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(e.ingest.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(mtlstest.Source(t, e.ca, "gateway").ClientConfig("ingest"))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.client = ingestv1.NewIngestServiceClient(conn)
	e.tokenAs = func(tenant, role string) string {
		now := time.Now()
		tok, err := authn.Sign(authn.Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: authn.Issuer, Audience: jwt.ClaimStrings{authn.Audience},
			Subject: "user-1", IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))}, TenantID: tenant, Role: role}, "k", priv)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	e.tokenOf = func(tenant string) string { return e.tokenAs(tenant, "manager") }
	return e
}

// stored is every event in the event stream.
func (e *privacyEnv) stored(t *testing.T) []*ingestv1.AcceptedEvent {
	t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, natsjs.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*ingestv1.AcceptedEvent
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		b, err := natsjs.DecodeBatch(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b.GetEvents()...)
	}
	return out
}

func click(id, user, anon string) *ingestv1.Event {
	return &ingestv1.Event{EventId: id, Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: user, AnonymousId: anon}
}

// A suppression dsr puts into the bucket applies to the next requests: the subject's events
// (by user id or anonymous id) are answered suppressed over the unary and the streaming RPC,
// a request of only such events succeeds, and none of them ever reaches the stream.
func TestSuppressedSubjectsNeverReachTheStream(t *testing.T) {
	e := newPrivacyEnv(t)
	ctx := as(e.tokenOf("tenant-1"))
	// The probe is a subject of its own, suppressed with the others: its events sent before the
	// suppressions applied are in the stream, and the checks below leave them out.
	for _, id := range []string{"gone", "anon-gone", "probe"} {
		if err := privacy.PutSuppression(context.Background(), e.kv, "tenant-1", e.hasher.SubjectHash("tenant-1", id), "dsr_1"); err != nil {
			t.Fatal(err)
		}
	}
	probe := 0
	meshtest.Eventually(t, 5*time.Second, func() bool {
		probe++
		resp, err := e.client.IngestEvents(ctx, &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click(fmt.Sprintf("probe-%d", probe), "probe", "")}})
		return err == nil && resp.GetSuppressed() == 1
	}, "the suppression put into the bucket did not apply")

	resp, err := e.client.IngestEvents(ctx, &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{
		click("a", "u1", ""), click("b", "gone", ""), click("c", "u2", "anon-gone"), click("d", "u3", "a3"), {EventId: "e"},
	}, Batch: 3})
	if err != nil || resp.GetAccepted() != 2 || resp.GetSuppressed() != 2 || len(resp.GetRejected()) != 1 || resp.GetBatch() != 3 {
		t.Fatalf("IngestEvents = %v, %v; want 2 accepted, 2 suppressed, 1 rejected", resp, err)
	}
	resp, err = e.client.IngestEvents(ctx, &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click("f", "gone", ""), click("g", "gone", "x")}})
	if err != nil || resp.GetAccepted() != 0 || resp.GetSuppressed() != 2 {
		t.Fatalf("a request of only suppressed events: %v, %v", resp, err)
	}
	stream, err := e.client.StreamEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, batch := range [][]*ingestv1.Event{{click("h", "gone", ""), click("i", "u4", "")}, {click("j", "", "anon-gone")}} {
		if err := stream.Send(&ingestv1.StreamEventsRequest{Events: batch, Batch: int64(i)}); err != nil {
			t.Fatal(err)
		}
		ack, err := stream.Recv()
		if err != nil || ack.GetSuppressed() != 1 || ack.GetAccepted() != int32(len(batch)-1) || ack.GetBatch() != int64(i) {
			t.Fatalf("stream batch %d: %v, %v", i, ack, err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("end of stream: %v", err)
	}

	var ids []string
	for _, a := range e.stored(t) {
		ev := a.GetEvent()
		if ev.GetUserId() == "probe" {
			continue
		}
		if ev.GetUserId() == "gone" || ev.GetAnonymousId() == "anon-gone" {
			t.Errorf("event %s of a suppressed subject is in the stream", ev.GetEventId())
		}
		ids = append(ids, ev.GetEventId())
	}
	slices.Sort(ids) // a request's events go out in a message per partition
	if got := strings.Join(ids, ","); got != "a,d,i" {
		t.Errorf("stream holds events %s, want a,d,i", got)
	}

	// The suppression removed: the subject's next events are accepted again.
	if err := privacy.DeleteSuppression(context.Background(), e.kv, "tenant-1", e.hasher.SubjectHash("tenant-1", "gone")); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 5*time.Second, func() bool {
		probe++
		resp, err := e.client.IngestEvents(ctx, &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click(fmt.Sprintf("probe-%d", probe), "gone", "")}})
		return err == nil && resp.GetAccepted() == 1
	}, "the removed suppression still applies")
}

// The tenant's policy as dsr puts it applies to the next requests: in the stream, hashed
// properties are equal for equal values and differ between tenants, dropped ones are absent,
// IPs are truncated (v4 and v6), user agents dropped; the raw values are nowhere.
func TestPolicyIsAppliedBeforeTheStream(t *testing.T) {
	e := newPrivacyEnv(t)
	pol := privacy.Policy{Version: 1, PropertyRules: map[string]privacy.Action{"email": privacy.ActionHash, "phone": privacy.ActionHash,
		"address": privacy.ActionDrop}, IP: privacy.IPTruncate, UserAgent: privacy.UserAgentDrop}
	for _, tenant := range []string{"tenant-1", "tenant-2"} {
		if err := privacy.PutPolicy(context.Background(), e.kv, tenant, pol); err != nil {
			t.Fatal(err)
		}
	}
	meshtest.Eventually(t, 5*time.Second, func() bool {
		return e.ingest.Privacy().Policy("tenant-1").Version == 1 && e.ingest.Privacy().Policy("tenant-2").Version == 1
	}, "the policies put into the bucket did not reach ingest")

	event := func(id, ip string) *ingestv1.Event {
		ev := click(id, "u1", "")
		ev.Properties, _ = structpb.NewStruct(map[string]any{"email": "raw@example.com", "phone": 15550100.0, "address": "1 Raw Street", "plan": "pro"})
		ev.Context = &ingestv1.EventContext{Ip: ip, UserAgent: "RawAgent/1.0", Locale: "en-US"}
		return ev
	}
	if _, err := e.client.IngestEvents(as(e.tokenOf("tenant-1")), &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{
		event("a", "203.0.113.77"), event("b", "2001:db8:1:2:3:4:5:6")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.IngestEvents(as(e.tokenOf("tenant-2")), &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{event("c", "198.51.100.9")}}); err != nil {
		t.Fatal(err)
	}
	byID := map[string]*ingestv1.Event{}
	for _, a := range e.stored(t) {
		byID[a.GetEvent().GetEventId()] = a.GetEvent()
		raw, _ := protojson.Marshal(a)
		for _, value := range []string{"raw@example.com", "15550100", "Raw Street", "RawAgent"} {
			if bytes.Contains(raw, []byte(value)) {
				t.Errorf("the stream holds the raw value %q: %s", value, raw)
			}
		}
	}
	a, b, c := byID["a"], byID["b"], byID["c"]
	if a == nil || b == nil || c == nil {
		t.Fatalf("stream holds %v", byID)
	}
	prop := func(ev *ingestv1.Event, k string) string { return ev.GetProperties().GetFields()[k].GetStringValue() }
	if prop(a, "email") != e.hasher.ValueHash("tenant-1", "raw@example.com") || prop(a, "email") != prop(b, "email") ||
		prop(a, "phone") != e.hasher.ValueHash("tenant-1", "15550100") {
		t.Errorf("hashed properties: %v and %v", a.GetProperties(), b.GetProperties())
	}
	if prop(c, "email") == prop(a, "email") || prop(c, "email") != e.hasher.ValueHash("tenant-2", "raw@example.com") {
		t.Errorf("tenant-2's hash %q equals tenant-1's or is not its own", prop(c, "email"))
	}
	for _, ev := range []*ingestv1.Event{a, b, c} {
		if _, ok := ev.GetProperties().GetFields()["address"]; ok || prop(ev, "plan") != "pro" {
			t.Errorf("event %s: properties %v, want address dropped and plan kept", ev.GetEventId(), ev.GetProperties())
		}
		if ev.GetContext().GetUserAgent() != "" || ev.GetContext().GetLocale() != "en-US" {
			t.Errorf("event %s: context %v", ev.GetEventId(), ev.GetContext())
		}
	}
	for ev, want := range map[*ingestv1.Event]string{a: "203.0.113.0", b: "2001:db8:1::", c: "198.51.100.0"} {
		if ev.GetContext().GetIp() != want {
			t.Errorf("event %s: IP %q, want %q", ev.GetEventId(), ev.GetContext().GetIp(), want)
		}
	}
}

// Through the gateway's REST mapping the answer says how many events were suppressed, too.
func TestGatewayRESTReportsSuppressed(t *testing.T) {
	e := newPrivacyEnv(t)
	if err := privacy.PutSuppression(context.Background(), e.kv, "tenant-1", e.hasher.SubjectHash("tenant-1", "gone"), "dsr_1"); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 5*time.Second, func() bool { return e.ingest.Privacy().Suppressions("tenant-1") == 1 },
		"the suppression did not reach ingest")
	conn, err := grpcclient.Dial(e.ingest.Addr(), "ingest", mtlstest.Source(t, e.ca, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	gw, err := gateway.New(context.Background(), gateway.Config{RateLimit: 1 << 20, Logger: slog.New(slog.DiscardHandler)},
		[]gateway.Backend{{Package: "campaignmesh.ingest.v1", Conn: conn, RegisterREST: ingestv1.RegisterIngestServiceHandler}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	body, _ := protojson.Marshal(&ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click("a", "gone", ""), click("b", "u1", "")}})
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/events:batch", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e.tokenOf("tenant-1"))
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Accepted, Suppressed int
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &got); err != nil || resp.StatusCode != http.StatusOK || got.Accepted != 1 || got.Suppressed != 1 {
		t.Fatalf("REST answer %d %s (%v), want accepted 1 and suppressed 1", resp.StatusCode, raw, err)
	}
}

// After a NATS restart (same store and port), a suppression put into the bucket applies to
// ingest's next requests within seconds: ingest watches the bucket again when it reconnects.
func TestSuppressionAppliesAfterANATSRestart(t *testing.T) {
	store := t.TempDir()
	ns := natstest.StartServerWith(t, func(o *server.Options) { o.StoreDir = store })
	_, portText, _ := net.SplitHostPort(ns.Addr().String())
	port, _ := strconv.Atoi(portText)
	e := newPrivacyEnvOn(t, ns)
	ctx := as(e.tokenOf("tenant-1"))
	if _, err := e.client.IngestEvents(ctx, &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click("a", "later-gone", "")}}); err != nil {
		t.Fatal(err)
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	natstest.StartServerWith(t, func(o *server.Options) { o.StoreDir, o.Port = store, port })
	meshtest.Eventually(t, 10*time.Second, func() bool {
		pctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return privacy.PutSuppression(pctx, e.kv, "tenant-1", e.hasher.SubjectHash("tenant-1", "later-gone"), "dsr_1") == nil
	}, "the suppression could not be put after the restart")
	put := time.Now()
	probe := 0
	meshtest.Eventually(t, 5*time.Second, func() bool {
		probe++
		resp, err := e.client.IngestEvents(ctx, &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click(fmt.Sprintf("probe-%d", probe), "later-gone", "")}})
		return err == nil && resp.GetSuppressed() == 1
	}, "a suppression put after a NATS restart did not apply")
	t.Logf("applied %s after the put", time.Since(put).Round(10*time.Millisecond))
}
