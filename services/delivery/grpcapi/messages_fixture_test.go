package grpcapi_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	sgstandin "github.com/campaignmesh/campaignmesh/internal/standin/sendgrid"
	twstandin "github.com/campaignmesh/campaignmesh/internal/standin/twilio"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/app"
	"github.com/campaignmesh/campaignmesh/services/delivery/sendgrid"
	"github.com/campaignmesh/campaignmesh/services/delivery/twilio"
)

// Permissions of the messages API.
const (
	messagesSend     = "messages.send"
	deliverySettings = "delivery.settings"
)

// links is a Links whose URLs show what they were made from (the tracking helper's signed
// links replace it in the service).
type links struct{}

func (links) Click(ref, target string) string {
	return "https://t.example/c/" + ref + "?u=" + url.QueryEscape(target)
}
func (links) Open(ref string) string        { return "https://t.example/o/" + ref + ".gif" }
func (links) Unsubscribe(ref string) string { return "https://t.example/u/" + ref }

// messagesEnv is env with the providers of test sends: the SendGrid and Twilio stand-ins
// behind the real clients.
type messagesEnv struct {
	*env
	messages deliveryv1.MessagesServiceClient
	m        *delivery.Messages
	mail     *sgstandin.Server
	sms      *twstandin.Server

	// verified and spare are an identity per tenant, reused while it exists (a tenant has at
	// most 50): the content's, and the target of verifications and deletions.
	verified, spare map[string]string
}

func newMessagesEnv(t *testing.T, testSendsPerMinute int) *messagesEnv {
	t.Helper()
	mail, err := sgstandin.New(sgstandin.Config{APIKey: "sg-test-key"})
	if err != nil {
		t.Fatal(err)
	}
	mailSrv := httptest.NewServer(mail)
	t.Cleanup(func() { mail.Close(); mailSrv.Close() })
	sg, err := sendgrid.New(sendgrid.Config{BaseURL: mailSrv.URL, APIKey: "sg-test-key", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const account, token = "AC00000000000000000000000000000017", "tw-token"
	sms, err := twstandin.New(twstandin.Config{AccountSID: account, AuthToken: token})
	if err != nil {
		t.Fatal(err)
	}
	smsSrv := httptest.NewServer(sms)
	t.Cleanup(func() { sms.Close(); smsSrv.Close() })
	tw, err := twilio.New(twilio.Config{BaseURL: smsSrv.URL, AccountSID: account, Password: token, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	twp, err := twilio.NewProvider(tw, twilio.ProviderConfig{From: "+15550001111"})
	if err != nil {
		t.Fatal(err)
	}

	issuer := meshtest.NewIssuer(t)
	keys := &keyring{jwt: issuer.Verifier()}
	d := servicetest.StartDelivery(t, servicetest.DeliveryOptions{Verifier: keys, Config: func(c *app.Config) {
		c.Links = links{}
		c.Sending.Providers = map[delivery.Channel]delivery.Provider{
			delivery.ChannelEmail: sendgrid.NewProvider(sg, sendgrid.ProviderConfig{From: sendgrid.Address{Email: "default@platform.example"}}),
			delivery.ChannelSMS:   twp,
		}
		c.TestSendsPerMinute = testSendsPerMinute
	}})
	conn := servicetest.Dial(t, d.Addr(), d.CA, "gateway", "delivery")
	e := &env{d: d, aud: d.Audiences(), conn: conn, client: deliveryv1.NewDeliveryServiceClient(conn), issuer: issuer, keys: keys}
	return &messagesEnv{env: e, messages: deliveryv1.NewMessagesServiceClient(conn), m: d.Messages(), mail: mail, sms: sms,
		verified: map[string]string{}, spare: map[string]string{}}
}

func newCampaignID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// identityIn makes, in tenant and directly through the domain, an email sender identity.
func (e *messagesEnv) identityIn(t *testing.T, tenant string, verified bool) delivery.SenderIdentity {
	t.Helper()
	ctx := context.Background()
	s, err := e.m.CreateSenderIdentity(ctx, tenant, delivery.SenderIdentity{Channel: delivery.ChannelEmail,
		FromEmail: fmt.Sprintf("news%d@shop.example", seq.Add(1)), FromName: "Shop"})
	if err != nil {
		t.Fatal(err)
	}
	if verified {
		if s, err = e.m.VerifySenderIdentity(ctx, tenant, s.ID); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// verifiedIn returns a verified email identity of tenant.
func (e *messagesEnv) verifiedIn(t *testing.T, tenant string) string {
	t.Helper()
	if e.verified[tenant] == "" {
		e.verified[tenant] = e.identityIn(t, tenant, true).ID
	}
	return e.verified[tenant]
}

// spareIn returns an identity of tenant that no content uses: the last one, unless it was
// deleted.
func (e *messagesEnv) spareIn(t *testing.T, tenant string) string {
	t.Helper()
	ids, err := e.m.ListSenderIdentities(context.Background(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ids {
		if s.ID == e.spare[tenant] {
			return s.ID
		}
	}
	e.spare[tenant] = e.identityIn(t, tenant, false).ID
	return e.spare[tenant]
}

// contentIn saves, in tenant and directly through the domain, the email content of a new
// campaign and returns the campaign's id.
func (e *messagesEnv) contentIn(t *testing.T, tenant string) string {
	t.Helper()
	id := newCampaignID()
	c := delivery.CampaignContent{CampaignID: id, Channel: delivery.ChannelEmail, SenderIdentityID: e.verifiedIn(t, tenant),
		Variants: []delivery.VariantContent{{Name: "A", Subject: "Hi {{first_name|there}}", HTMLBody: `<p>Hi {{first_name|there}}</p>`}}}
	if _, err := e.m.SetCampaignContent(context.Background(), tenant, c, 0); err != nil {
		t.Fatal(err)
	}
	return id
}

// newContent is complete email content as a client sends it.
func newContent(identity string) *deliveryv1.CampaignContent {
	return &deliveryv1.CampaignContent{
		Channel: deliveryv1.Channel_CHANNEL_EMAIL, SenderIdentityId: identity,
		QuietHoursStart: "21:00", QuietHoursEnd: "08:00", SendAtLocalTime: "09:30",
		MessageCost: &deliveryv1.Money{AmountMicros: 2_000, CurrencyCode: "EUR"}, ClickCost: &deliveryv1.Money{AmountMicros: 100_000, CurrencyCode: "EUR"},
		Variants: []*deliveryv1.VariantContent{
			{Name: "A", Subject: "Hi {{first_name|there}}", HtmlBody: `<p>Hi {{first_name|there}}, <a href="https://shop.example/sale">sale</a></p>`},
			{Name: "B", Subject: "Sale", TextBody: "Sale for {{first_name|you}}"},
		},
	}
}
