package grpcapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/access"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/auth"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/app"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
	"github.com/campaignmesh/campaignmesh/services/delivery/sendgrid"
	"github.com/campaignmesh/campaignmesh/services/delivery/twilio"
)

type costs struct{}

func (costs) Costs(context.Context, string, string) (delivery.Money, delivery.Money, error) {
	return delivery.Money{Micros: 2000, Currency: "USD"}, delivery.Money{Micros: 100000, Currency: "USD"}, nil
}

// trackingEnv is the delivery service with tracking on, reporting to a real ingest service on
// a fresh JetStream, with a SendGrid webhook key and a Twilio auth token of the test's.
type trackingEnv struct {
	d       *servicetest.Delivery
	js      jetstream.JetStream
	key     delivery.TrackingKey
	links   delivery.TrackingLinks
	sgKey   *ecdsa.PrivateKey
	twilio  *twilio.Validator
	issuer  *meshtest.Issuer
	contact delivery.Contact
	ref     string
	variant string
}

const twilioToken = "twilio-auth-token-of-the-test"

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newTrackingEnv(t *testing.T) *trackingEnv { return newTrackingEnvIn(t, nil, "", "tenant-a") }

// newTrackingEnvIn is newTrackingEnv with the mesh's CA (nil: a new one), auth's address (empty:
// none, audit records stay in the outbox) and the contact's tenant.
func newTrackingEnvIn(t *testing.T, ca *mtls.CA, authAddr, tenant string) *trackingEnv {
	t.Helper()
	if ca == nil {
		ca = mtlstest.NewCA(t)
	}
	ns := natstest.StartServer(t)
	nc, js, err := natsjs.Connect(ns.ClientURL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	ing := servicetest.StartIngest(t, servicetest.IngestOptions{CA: ca, NATS: ns,
		Verifier: authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": pub})}})
	sgKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&sgKey.PublicKey)
	issuer := meshtest.NewIssuer(t)
	keyText := strings.Repeat("tracking-key-", 3)
	d := servicetest.StartDelivery(t, servicetest.DeliveryOptions{CA: ca, AuthAddr: authAddr, Verifier: issuer.Verifier(), Config: func(c *app.Config) {
		c.Tracking = app.TrackingConfig{KeyFile: writeFile(t, "key", keyText+"\n"), PublicURL: "https://gw.example", IngestAddr: ing.Addr(),
			SendGridWebhookPublicKeyFile: writeFile(t, "sg.pub", base64.StdEncoding.EncodeToString(der)),
			TwilioAuthTokenFile:          writeFile(t, "twilio", twilioToken+"\n"), Pricing: costs{}}
	}})
	key := delivery.TrackingKey{Current: []byte(keyText)}
	e := &trackingEnv{d: d, js: js, key: key, links: delivery.TrackingLinks{BaseURL: "https://gw.example", Key: key}, sgKey: sgKey,
		twilio: twilio.NewValidator(twilioToken), issuer: issuer}
	ctx := context.Background()
	granted := delivery.Consent{State: delivery.ConsentGranted, Source: "form"}
	e.contact, err = d.Audiences().CreateContact(ctx, tenant, delivery.Contact{Email: "ann@example.com", Phone: "+14155550100",
		Consent: delivery.Consents{Email: granted, SMS: granted}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.NewLedger(d.Store().Pool()).AddRecipients(ctx, tenant, "camp-1", []delivery.Variant{{Name: "a", Weight: 1}, {Name: "b", Weight: 1}},
		[]delivery.NewRecipient{{ContactID: e.contact.ID, Address: e.contact.Email}}); err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := d.Store().Pool().QueryRow(ctx, `SELECT id, variant FROM ledger`).Scan(&id, &e.variant); err != nil {
		t.Fatal(err)
	}
	e.ref = strconv.FormatInt(id, 10)
	return e
}

func (e *trackingEnv) client(t *testing.T, identity string) deliveryv1.TrackingServiceClient {
	return deliveryv1.NewTrackingServiceClient(servicetest.Dial(t, e.d.Addr(), e.d.CA, identity, "delivery"))
}

// stored returns the events in the stream.
func (e *trackingEnv) stored(t *testing.T) []*ingestv1.AcceptedEvent {
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
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
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

// signedSendGrid is a SendGrid Event Webhook request signed with the env's key.
func (e *trackingEnv) signedSendGrid(t *testing.T, events []map[string]any) *deliveryv1.ReceiveProviderWebhookRequest {
	t.Helper()
	body, err := json.Marshal(events)
	if err != nil {
		t.Fatal(err)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	sum := sha256.Sum256(append([]byte(ts), body...))
	sig, err := ecdsa.SignASN1(rand.Reader, e.sgKey, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return &deliveryv1.ReceiveProviderWebhookRequest{Kind: deliveryv1.WebhookKind_WEBHOOK_KIND_SENDGRID_EVENTS, Url: "https://gw.example/webhooks/sendgrid",
		Headers: map[string]string{sendgrid.SignatureHeader: base64.StdEncoding.EncodeToString(sig), sendgrid.TimestampHeader: ts}, Body: body}
}

// signedTwilio is a Twilio webhook request to rawURL with form, signed with the env's token.
func (e *trackingEnv) signedTwilio(kind deliveryv1.WebhookKind, rawURL string, form url.Values) *deliveryv1.ReceiveProviderWebhookRequest {
	return &deliveryv1.ReceiveProviderWebhookRequest{Kind: kind, Url: rawURL, Body: []byte(form.Encode()),
		Headers: map[string]string{twilio.SignatureHeader: e.twilio.Signature(rawURL, form)}}
}

// Every TrackingService RPC answers only the gateway's mesh identity, and never on a user's
// credential relayed by it (the gateway forwards none: recipients and providers have none).
func TestTrackingAuthorization(t *testing.T) {
	e := newTrackingEnv(t)
	sd := deliveryv1.File_campaignmesh_delivery_v1_tracking_proto.Services().ByName("TrackingService")
	calls := map[string]func(deliveryv1.TrackingServiceClient, context.Context) error{
		"TrackClick": func(c deliveryv1.TrackingServiceClient, ctx context.Context) error {
			_, err := c.TrackClick(ctx, &deliveryv1.TrackClickRequest{Token: strings.TrimPrefix(e.links.Click(e.ref, "https://x.example/"), "https://gw.example/t/c/")})
			return err
		},
		"TrackOpen": func(c deliveryv1.TrackingServiceClient, ctx context.Context) error {
			_, err := c.TrackOpen(ctx, &deliveryv1.TrackOpenRequest{Token: e.key.Sign(delivery.TokenOpen, e.ref, "")})
			return err
		},
		"GetUnsubscribe": func(c deliveryv1.TrackingServiceClient, ctx context.Context) error {
			_, err := c.GetUnsubscribe(ctx, &deliveryv1.GetUnsubscribeRequest{Token: e.key.Sign(delivery.TokenUnsubscribe, e.ref, "")})
			return err
		},
		"Unsubscribe": func(c deliveryv1.TrackingServiceClient, ctx context.Context) error {
			_, err := c.Unsubscribe(ctx, &deliveryv1.UnsubscribeRequest{Token: e.key.Sign(delivery.TokenUnsubscribe, e.ref, "")})
			return err
		},
		"ReceiveProviderWebhook": func(c deliveryv1.TrackingServiceClient, ctx context.Context) error {
			_, err := c.ReceiveProviderWebhook(ctx, e.signedSendGrid(t, []map[string]any{{"event": "processed", "sg_message_id": "m.1", "timestamp": 1}}))
			return err
		},
	}
	if sd.Methods().Len() != len(calls) {
		t.Fatalf("TrackingService has %d methods, the test knows %d", sd.Methods().Len(), len(calls))
	}
	for name, call := range calls {
		for _, id := range access.MeshIdentities {
			want := codes.PermissionDenied
			if id == "gateway" {
				want = codes.OK
			}
			if got := status.Code(call(e.client(t, id), context.Background())); got != want {
				t.Errorf("%s as %s: %v, want %v", name, id, got, want)
			}
		}
		tok := e.issuer.Token(t, "tenant-a", rbac.Admin, "admin@a")
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
		if got := status.Code(call(e.client(t, "gateway"), ctx)); got != codes.PermissionDenied {
			t.Errorf("%s with an admin's token through the gateway: %v, want PermissionDenied", name, got)
		}
	}
}

// A click through the API lands in the stream as a priced click; forged links are NOT_FOUND.
func TestTrackClickThroughTheAPI(t *testing.T) {
	e := newTrackingEnv(t)
	c := e.client(t, "gateway")
	tok := strings.TrimPrefix(e.links.Click(e.ref, "https://shop.example.com/p"), "https://gw.example/t/c/")
	resp, err := c.TrackClick(context.Background(), &deliveryv1.TrackClickRequest{Token: tok, UserAgent: "UA", Ip: "198.51.100.1"})
	if err != nil || resp.GetTargetUrl() != "https://shop.example.com/p" || !resp.GetRecorded() {
		t.Fatalf("TrackClick = %v, %v", resp, err)
	}
	forged := delivery.TrackingKey{Current: []byte(strings.Repeat("x", 32))}.Sign(delivery.TokenClick, e.ref, "https://evil.example/")
	if _, err := c.TrackClick(context.Background(), &deliveryv1.TrackClickRequest{Token: forged}); status.Code(err) != codes.NotFound {
		t.Errorf("forged link: %v", err)
	}
	evs := e.stored(t)
	if len(evs) != 1 {
		t.Fatalf("stream holds %d events", len(evs))
	}
	ev := evs[0].GetEvent()
	if evs[0].GetTenantId() != "tenant-a" || ev.GetType() != ingestv1.EventType_EVENT_TYPE_CLICK || ev.GetCampaignId() != "camp-1" ||
		ev.GetVariant() != e.variant || ev.GetUserId() != e.contact.ID || ev.GetValue().GetAmountMicros() != 100000 {
		t.Errorf("stored %v", evs[0])
	}
}

// Webhooks: a bad signature is refused with nothing done; the same signed webhook twice is one
// event and one status change; a hard bounce suppresses; Twilio's status and inbound STOP work
// on their signatures, and a Twilio request with a bad one is refused.
func TestProviderWebhooks(t *testing.T) {
	e := newTrackingEnv(t)
	ctx := context.Background()
	c := e.client(t, "gateway")
	pool := e.d.Store().Pool()
	if _, err := pool.Exec(ctx, `UPDATE ledger SET provider_id = 'sgmsg1'`); err != nil {
		t.Fatal(err)
	}
	delivered := []map[string]any{{"event": "delivered", "sg_message_id": "sgmsg1.filter1", "timestamp": 1764410000, "sg_event_id": "e1", "cm_ref": e.ref}}
	bad := e.signedSendGrid(t, delivered)
	bad.Body = []byte(strings.Replace(string(bad.Body), "delivered", "bounce", 1))
	if _, err := c.ReceiveProviderWebhook(ctx, bad); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("altered body: %v", err)
	}
	if n := len(e.stored(t)); n != 0 {
		t.Fatalf("a refused webhook stored %d events", n)
	}
	if _, err := c.ReceiveProviderWebhook(ctx, e.signedSendGrid(t, delivered)); err != nil {
		t.Fatal(err)
	}
	delivered[0]["sg_event_id"] = "e1-redelivered" // SendGrid's event id may change on redelivery
	if _, err := c.ReceiveProviderWebhook(ctx, e.signedSendGrid(t, delivered)); err != nil {
		t.Fatal(err)
	}
	evs := e.stored(t)
	if len(evs) != 1 || evs[0].GetEvent().GetType() != ingestv1.EventType_EVENT_TYPE_IMPRESSION || evs[0].GetEvent().GetValue().GetAmountMicros() != 2000 {
		t.Fatalf("after the same webhook twice: %v", evs)
	}
	var status_ string
	var events int
	if err := pool.QueryRow(ctx, `SELECT delivery_status, (SELECT count(*) FROM provider_events) FROM ledger`).Scan(&status_, &events); err != nil || status_ != "delivered" || events != 1 {
		t.Fatalf("status %q, %d provider events, %v", status_, events, err)
	}
	bounce := []map[string]any{{"event": "bounce", "type": "bounce", "sg_message_id": "sgmsg1.filter1", "timestamp": 1764410100, "cm_ref": e.ref}}
	if _, err := c.ReceiveProviderWebhook(ctx, e.signedSendGrid(t, bounce)); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.d.Audiences().GetContact(ctx, "tenant-a", e.contact.ID); !got.Suppressed || got.SuppressionReason != "hard_bounce" {
		t.Errorf("hard bounce: contact %+v", got)
	}

	// Twilio: a status callback (ref from the callback URL the client set) and inbound STOP.
	if _, err := pool.Exec(ctx, `UPDATE ledger SET provider_id = 'SM1'`); err != nil {
		t.Fatal(err)
	}
	statusURL := "https://gw.example/webhooks/twilio/status?" + twilio.RefParam + "=" + e.ref
	form := url.Values{"MessageSid": {"SM1"}, "MessageStatus": {"undelivered"}, "ErrorCode": {"30003"}}
	forgedReq := e.signedTwilio(deliveryv1.WebhookKind_WEBHOOK_KIND_TWILIO_STATUS, statusURL, form)
	forgedReq.Headers[twilio.SignatureHeader] = base64.StdEncoding.EncodeToString(make([]byte, 20))
	if _, err := c.ReceiveProviderWebhook(ctx, forgedReq); status.Code(err) != codes.PermissionDenied {
		t.Errorf("twilio bad signature: %v", err)
	}
	for range 2 {
		if _, err := c.ReceiveProviderWebhook(ctx, e.signedTwilio(deliveryv1.WebhookKind_WEBHOOK_KIND_TWILIO_STATUS, statusURL, form)); err != nil {
			t.Fatal(err)
		}
	}
	names := func() []string {
		var out []string
		for _, ev := range e.stored(t) {
			out = append(out, ev.GetEvent().GetName())
		}
		return out
	}
	if got := names(); len(got) != 3 || !slices.Contains(got, delivery.EventNameUndelivered) {
		t.Errorf("events %v, want delivered, bounced, undelivered once each", got)
	}
	inbound := e.links.InboundSMS("tenant-a")
	if _, err := c.ReceiveProviderWebhook(ctx, e.signedTwilio(deliveryv1.WebhookKind_WEBHOOK_KIND_TWILIO_INBOUND, inbound,
		url.Values{"From": {"+14155550100"}, "To": {"+15005550006"}, "Body": {"STOP"}, "MessageSid": {"SMin1"}})); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.d.Audiences().GetContact(ctx, "tenant-a", e.contact.ID); got.Consent.SMS.State != delivery.ConsentRevoked {
		t.Errorf("after STOP: sms consent %+v", got.Consent.SMS)
	}
}

// The audit records of tracking's changes (a recipient's unsubscribe, a provider's hard bounce,
// an inbound STOP) are ones auth accepts from the delivery service: the outbox delivers them
// and they are in the tenant's chain.
func TestTrackingAuditRecordsReachAuth(t *testing.T) {
	a := servicetest.StartAuth(t, servicetest.AuthOptions{})
	ctx := context.Background()
	tn, err := a.Service().CreateTenant(ctx, "shop", "Shop")
	if err != nil {
		t.Fatal(err)
	}
	e := newTrackingEnvIn(t, a.CA, a.Addr(), tn.ID)
	c := e.client(t, "gateway")
	if _, err := c.Unsubscribe(ctx, &deliveryv1.UnsubscribeRequest{Token: e.key.Sign(delivery.TokenUnsubscribe, e.ref, "")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReceiveProviderWebhook(ctx, e.signedSendGrid(t, []map[string]any{
		{"event": "bounce", "type": "bounce", "sg_message_id": "m.1", "timestamp": 1764410000, "cm_ref": e.ref}})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReceiveProviderWebhook(ctx, e.signedTwilio(deliveryv1.WebhookKind_WEBHOOK_KIND_TWILIO_INBOUND, e.links.InboundSMS(tn.ID),
		url.Values{"From": {"+14155550100"}, "To": {"+15005550006"}, "Body": {"STOP"}})); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 20*time.Second, func() bool {
		n, err := e.d.Outbox().Pending(ctx)
		return err == nil && n == 0
	}, "the outbox did not deliver the records to auth")
	entries, _, err := a.Service().ListAuditRecords(ctx, &authn.Principal{TenantID: tn.ID, Permissions: rbac.Admin.Permissions()}, auth.AuditFilter{}, 100, "")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range entries {
		if r.Service == "delivery" && r.Resource == e.contact.ID {
			got[r.Method] = true
		}
	}
	for _, m := range []string{delivery.AuditMethodUnsubscribe, delivery.AuditMethodSendGridWebhook, delivery.AuditMethodInboundSMS} {
		if !got[m] {
			t.Errorf("auth's chain has no %s record of the contact: %v", m, got)
		}
	}
}
