package gateway_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"image/gif"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/gateway"
	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	sgstandin "github.com/campaignmesh/campaignmesh/internal/standin/sendgrid"
	twstandin "github.com/campaignmesh/campaignmesh/internal/standin/twilio"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	deliveryapp "github.com/campaignmesh/campaignmesh/services/delivery/app"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
	"github.com/campaignmesh/campaignmesh/services/delivery/sendgrid"
	"github.com/campaignmesh/campaignmesh/services/delivery/twilio"
)

type trackingCosts struct{}

func (trackingCosts) Costs(context.Context, string, string) (delivery.Money, delivery.Money, error) {
	return delivery.Money{Micros: 2000, Currency: "USD"}, delivery.Money{Micros: 100000, Currency: "USD"}, nil
}

// trackingEnv is the real gateway in front of the real delivery service (tracking on), which
// reports to a real ingest on an embedded JetStream; one contact in one campaign's ledger.
type trackingEnv struct {
	url     string
	js      jetstream.JetStream
	key     delivery.TrackingKey
	sgKey   *ecdsa.PrivateKey
	twilio  *twilio.Validator
	d       *servicetest.Delivery
	contact delivery.Contact
	ref     string
}

func newTrackingEnv(t *testing.T) *trackingEnv {
	t.Helper()
	ca := mtlstest.NewCA(t)
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
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyText := strings.Repeat("gateway-test-key", 2)
	d := servicetest.StartDelivery(t, servicetest.DeliveryOptions{CA: ca, Verifier: meshtest.NewIssuer(t).Verifier(), Config: func(c *deliveryapp.Config) {
		c.Tracking = deliveryapp.TrackingConfig{KeyFile: write("key", keyText), PublicURL: "https://gw.example", IngestAddr: ing.Addr(),
			SendGridWebhookPublicKeyFile: write("sg", base64.StdEncoding.EncodeToString(der)), TwilioAuthTokenFile: write("tw", "tw-token"),
			Pricing: trackingCosts{}}
	}})
	conn, err := grpcclient.Dial(d.Addr(), "delivery", mtlstest.Source(t, ca, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	gw, err := gateway.New(context.Background(), gateway.Config{RateLimit: 1 << 20, Logger: slog.New(slog.DiscardHandler)},
		[]gateway.Backend{{Package: "campaignmesh.delivery.v1", Conn: conn, RegisterREST: deliveryv1.RegisterDeliveryServiceHandler}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	e := &trackingEnv{url: srv.URL, js: js, key: delivery.TrackingKey{Current: []byte(keyText)}, sgKey: sgKey, twilio: twilio.NewValidator("tw-token"), d: d}
	ctx := context.Background()
	granted := delivery.Consent{State: delivery.ConsentGranted, Source: "form"}
	if e.contact, err = d.Audiences().CreateContact(ctx, "tenant-a", delivery.Contact{Email: "ann@example.com", Phone: "+14155550100",
		Consent: delivery.Consents{Email: granted, SMS: granted}}); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.NewLedger(d.Store().Pool()).AddRecipients(ctx, "tenant-a", "camp-1", []delivery.Variant{{Name: "a", Weight: 1}},
		[]delivery.NewRecipient{{ContactID: e.contact.ID, Address: e.contact.Email}}); err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := d.Store().Pool().QueryRow(ctx, `SELECT id FROM ledger`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	e.ref = strconv.FormatInt(id, 10)
	return e
}

func (e *trackingEnv) do(t *testing.T, method, path string, body []byte, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, string(raw)
}

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

func (e *trackingEnv) contactNow(t *testing.T) delivery.Contact {
	t.Helper()
	c, err := e.d.Audiences().GetContact(context.Background(), "tenant-a", e.contact.ID)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A tracked link redirects and its click lands in the stream, priced; a forged or altered link
// is a plain 404 that says nothing more; the pixel is a GIF whatever its token.
func TestTrackedLinkAndPixelThroughTheGateway(t *testing.T) {
	e := newTrackingEnv(t)
	tok := e.key.Sign(delivery.TokenClick, e.ref, "https://shop.example.com/sale?x=1")
	resp, _ := e.do(t, http.MethodGet, "/t/c/"+tok, nil, map[string]string{"User-Agent": "UA/1"})
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://shop.example.com/sale?x=1" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("click: %d %v", resp.StatusCode, resp.Header)
	}
	evs := e.stored(t)
	if len(evs) != 1 || evs[0].GetTenantId() != "tenant-a" || evs[0].GetEvent().GetType() != ingestv1.EventType_EVENT_TYPE_CLICK ||
		evs[0].GetEvent().GetCampaignId() != "camp-1" || evs[0].GetEvent().GetVariant() != "a" || evs[0].GetEvent().GetUserId() != e.contact.ID ||
		evs[0].GetEvent().GetValue().GetAmountMicros() != 100000 {
		t.Fatalf("stored %v", evs)
	}
	altered := []byte(tok)
	altered[len(altered)/2] ^= 0x01
	forged := delivery.TrackingKey{Current: []byte(strings.Repeat("f", 32))}.Sign(delivery.TokenClick, e.ref, "https://evil.example/")
	for _, bad := range []string{string(altered), forged, "x", strings.Repeat("A", 5000)} {
		resp, body := e.do(t, http.MethodGet, "/t/c/"+bad, nil, nil)
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Location") != "" || strings.TrimSpace(body) != "not found" {
			t.Errorf("bad link %.20q: %d %q", bad, resp.StatusCode, body)
		}
	}
	for _, p := range []string{"/t/o/" + e.key.Sign(delivery.TokenOpen, e.ref, "") + ".gif", "/t/o/forged.gif"} {
		resp, body := e.do(t, http.MethodGet, p, nil, nil)
		if _, err := gif.Decode(strings.NewReader(body)); resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/gif" || err != nil {
			t.Errorf("pixel %s: %d %s %v", p, resp.StatusCode, resp.Header.Get("Content-Type"), err)
		}
	}
	if evs := e.stored(t); len(evs) != 2 || evs[1].GetEvent().GetName() != delivery.EventNameOpened {
		t.Errorf("after the pixels: %v", evs)
	}
}

// The unsubscribe page changes nothing; the RFC 8058 one-click POST unsubscribes at once.
func TestOneClickUnsubscribeThroughTheGateway(t *testing.T) {
	e := newTrackingEnv(t)
	path := "/u/" + e.key.Sign(delivery.TokenUnsubscribe, e.ref, "")
	resp, body := e.do(t, http.MethodGet, path, nil, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<form method="post">`) || resp.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("page: %d %s", resp.StatusCode, body)
	}
	if c := e.contactNow(t); c.Consent.Email.State != delivery.ConsentGranted {
		t.Fatal("the page unsubscribed")
	}
	resp, _ = e.do(t, http.MethodPost, path, []byte("List-Unsubscribe=One-Click"), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("one-click POST: %d", resp.StatusCode)
	}
	if c := e.contactNow(t); c.Consent.Email.State != delivery.ConsentRevoked {
		t.Errorf("after the one-click POST: %+v", c.Consent.Email)
	}
	if resp, _ := e.do(t, http.MethodPost, "/u/forged", nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("forged unsubscribe: %d", resp.StatusCode)
	}
}

// Webhooks through the gateway: SendGrid's signed post is handled once however often it comes,
// a bad signature is 403; Twilio's inbound STOP is checked against the URL Twilio called.
func TestProviderWebhooksThroughTheGateway(t *testing.T) {
	e := newTrackingEnv(t)
	body := []byte(`[{"event":"delivered","sg_message_id":"m1.f","timestamp":1764410000,"cm_ref":"` + e.ref + `"}]`)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	sum := sha256.Sum256(append([]byte(ts), body...))
	sig, _ := ecdsa.SignASN1(rand.Reader, e.sgKey, sum[:])
	headers := map[string]string{"X-Twilio-Email-Event-Webhook-Signature": base64.StdEncoding.EncodeToString(sig),
		"X-Twilio-Email-Event-Webhook-Timestamp": ts, "Content-Type": "application/json"}
	for range 2 {
		if resp, b := e.do(t, http.MethodPost, "/webhooks/sendgrid", body, headers); resp.StatusCode != http.StatusOK {
			t.Fatalf("sendgrid: %d %s", resp.StatusCode, b)
		}
	}
	tampered := bytes.Replace(body, []byte("delivered"), []byte("bounce"), 1)
	if resp, b := e.do(t, http.MethodPost, "/webhooks/sendgrid", tampered, headers); resp.StatusCode != http.StatusForbidden || strings.Contains(b, "signature") {
		t.Errorf("tampered sendgrid: %d %q", resp.StatusCode, b)
	}
	if evs := e.stored(t); len(evs) != 1 || evs[0].GetEvent().GetType() != ingestv1.EventType_EVENT_TYPE_IMPRESSION {
		t.Fatalf("after the webhook twice: %v", evs)
	}

	inbound := "/webhooks/twilio/inbound?cm_tenant=" + e.key.Sign(delivery.TokenTenant, "tenant-a", "")
	form := url.Values{"From": {"+14155550100"}, "To": {"+15005550006"}, "Body": {"STOP"}, "MessageSid": {"SMin"}}
	twHeaders := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": e.twilio.Signature("https://wrong.example"+inbound, form)}
	if resp, _ := e.do(t, http.MethodPost, inbound, []byte(form.Encode()), twHeaders); resp.StatusCode != http.StatusForbidden {
		t.Errorf("twilio signed for another url: %d", resp.StatusCode)
	}
	if c := e.contactNow(t); c.Consent.SMS.State != delivery.ConsentGranted {
		t.Fatal("a refused STOP changed consent")
	}
	twHeaders["X-Twilio-Signature"] = e.twilio.Signature(e.url+inbound, form)
	resp, b := e.do(t, http.MethodPost, inbound, []byte(form.Encode()), twHeaders)
	if resp.StatusCode != http.StatusOK || !strings.Contains(b, "<Response></Response>") {
		t.Fatalf("twilio inbound: %d %s", resp.StatusCode, b)
	}
	if c := e.contactNow(t); c.Consent.SMS.State != delivery.ConsentRevoked {
		t.Errorf("after STOP: %+v", c.Consent.SMS)
	}
}

// The providers' stand-ins, sending real messages through delivery's clients, post their signed
// webhooks to the gateway: SendGrid's delivered event and Twilio's status callbacks each become
// one delivered impression of the right contact, and the Twilio stand-in's simulated inbound
// STOP revokes sms consent.
func TestStandinWebhooksThroughTheGateway(t *testing.T) {
	e := newTrackingEnv(t)
	ctx := context.Background()
	pool := e.d.Store().Pool()

	sgs, err := sgstandin.New(sgstandin.Config{APIKey: "SG.test", WebhookURL: e.url + "/webhooks/sendgrid", Key: e.sgKey})
	if err != nil {
		t.Fatal(err)
	}
	sgSrv := httptest.NewServer(sgs)
	t.Cleanup(func() { sgs.Close(); sgSrv.Close() })
	sgc, err := sendgrid.New(sendgrid.Config{BaseURL: sgSrv.URL, APIKey: "SG.test"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := sendgrid.NewProvider(sgc, sendgrid.ProviderConfig{From: sendgrid.Address{Email: "shop@example.com"}}).Send(ctx,
		delivery.Message{Ref: e.ref, To: e.contact.Email, Subject: "Hi", Text: "Hello"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE ledger SET state = 'sent', provider_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	delivered := func(want int) func() bool {
		return func() bool {
			n := 0
			for _, ev := range e.stored(t) {
				if ev.GetEvent().GetType() == ingestv1.EventType_EVENT_TYPE_IMPRESSION && ev.GetEvent().GetUserId() == e.contact.ID {
					n++
				}
			}
			return n == want
		}
	}
	meshtest.Eventually(t, 10*time.Second, delivered(1), "the sendgrid stand-in's delivered event never reached the stream")

	tws, err := twstandin.New(twstandin.Config{AccountSID: "AC1", AuthToken: "tw-token",
		InboundURL: e.url + "/webhooks/twilio/inbound?cm_tenant=" + e.key.Sign(delivery.TokenTenant, "tenant-a", "")})
	if err != nil {
		t.Fatal(err)
	}
	twSrv := httptest.NewServer(tws)
	t.Cleanup(func() { tws.Close(); twSrv.Close() })
	twc, err := twilio.New(twilio.Config{BaseURL: twSrv.URL, AccountSID: "AC1", Password: "tw-token"})
	if err != nil {
		t.Fatal(err)
	}
	twp, err := twilio.NewProvider(twc, twilio.ProviderConfig{From: "+15005550006", StatusCallback: e.url + "/webhooks/twilio/status"})
	if err != nil {
		t.Fatal(err)
	}
	// The row as a new attempt leaves it: the sender records the provider id only after the
	// answer, which a fast callback may overtake (an empty id matches any message).
	if _, err := pool.Exec(ctx, `UPDATE ledger SET provider_id = ''`); err != nil {
		t.Fatal(err)
	}
	if _, err := twp.Send(ctx, delivery.Message{Ref: e.ref, To: e.contact.Phone, Text: "Hello"}); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 10*time.Second, delivered(2), "the twilio stand-in's delivered callback never reached the stream")

	resp, err := http.Post(twSrv.URL+"/inbound", "application/json", strings.NewReader(`{"from":"+14155550100","to":"+15005550006","body":"STOP"}`))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(raw), `"status":200`) {
		t.Fatalf("inbound: %s", raw)
	}
	if c := e.contactNow(t); c.Consent.SMS.State != delivery.ConsentRevoked {
		t.Errorf("after the stand-in's STOP: %+v", c.Consent.SMS)
	}
}
