package grpcapi_test

import (
	"context"
	"math"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/campaignmesh/campaignmesh/gateway"
	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/sendgrid"
)

// Content and sender identities through the API: an identity is created unverified and
// content using it is refused until an admin verifies it; content round-trips (times of day,
// costs, variants) under etags over gRPC and over REST (PUT and GET through the gateway);
// malformed times of day are invalid arguments; each change is audited once.
func TestContentThroughTheAPI(t *testing.T) {
	t.Parallel()
	e := newMessagesEnv(t, 0)
	ctx := meshtest.Bearer(context.Background(), e.apiKey("t1", messagesSend))
	admin := meshtest.Bearer(context.Background(), e.apiKey("t1", deliverySettings))
	pending := func() int {
		n, err := e.d.Outbox().Pending(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := pending()
	id, err := e.messages.CreateSenderIdentity(ctx, &deliveryv1.CreateSenderIdentityRequest{SenderIdentity: &deliveryv1.SenderIdentity{
		Channel: deliveryv1.Channel_CHANNEL_EMAIL, FromEmail: "News@Shop.example", FromName: "Shop", Verified: true}})
	if err != nil || id.GetVerified() || id.GetFromEmail() != "news@shop.example" {
		t.Fatalf("create identity (verified is output only): %v %v", id, err)
	}
	campaign := newCampaignID()
	_, err = e.messages.SetCampaignContent(ctx, &deliveryv1.SetCampaignContentRequest{CampaignId: campaign, Content: newContent(id.GetId())})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("content with an unverified identity: %v, want FAILED_PRECONDITION", err)
	}
	if _, err := e.messages.VerifySenderIdentity(ctx, &deliveryv1.VerifySenderIdentityRequest{Id: id.GetId()}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("verify with messages.send only: %v, want PERMISSION_DENIED", err)
	}
	if v, err := e.messages.VerifySenderIdentity(admin, &deliveryv1.VerifySenderIdentityRequest{Id: id.GetId()}); err != nil || !v.GetVerified() {
		t.Fatalf("verify: %v %v", v, err)
	}
	in := newContent(id.GetId())
	c, err := e.messages.SetCampaignContent(ctx, &deliveryv1.SetCampaignContentRequest{CampaignId: campaign, Content: in})
	if err != nil || c.GetEtag() != "r1" || c.GetCampaignId() != campaign || c.GetQuietHoursStart() != "21:00" || c.GetQuietHoursEnd() != "08:00" ||
		c.GetSendAtLocalTime() != "09:30" || c.GetClickCost().GetAmountMicros() != 100_000 || len(c.GetVariants()) != 2 {
		t.Fatalf("set: %v %v", c, err)
	}
	in.Etag = "r1"
	in.Variants[1].TextBody = "Changed"
	if c, err = e.messages.SetCampaignContent(ctx, &deliveryv1.SetCampaignContentRequest{CampaignId: campaign, Content: in}); err != nil || c.GetEtag() != "r2" {
		t.Fatalf("change under the etag: %v %v", c, err)
	}
	if _, err := e.messages.SetCampaignContent(ctx, &deliveryv1.SetCampaignContentRequest{CampaignId: campaign, Content: in}); status.Code(err) != codes.Aborted {
		t.Fatalf("stale etag: %v, want ABORTED", err)
	}
	for _, edit := range []func(*deliveryv1.CampaignContent){
		func(c *deliveryv1.CampaignContent) { c.QuietHoursStart = "9pm" },
		func(c *deliveryv1.CampaignContent) { c.QuietHoursEnd = "" },
		func(c *deliveryv1.CampaignContent) { c.SendAtLocalTime = "24:00" },
		func(c *deliveryv1.CampaignContent) { c.Etag = "W/1" },
		func(c *deliveryv1.CampaignContent) { c.Variants[0].HtmlBody = "{{first name}}" },
	} {
		bad := newContent(id.GetId())
		edit(bad)
		if _, err := e.messages.SetCampaignContent(ctx, &deliveryv1.SetCampaignContentRequest{CampaignId: campaign, Content: bad}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("set %v: %v, want INVALID_ARGUMENT", bad, err)
		}
	}
	// Every audited call is recorded once, refusals included: create, verify, two saves
	// (4) and the unverified save, the denied verify, the stale save and five invalid (8).
	if got := pending() - before; got != 12 {
		t.Errorf("%d audit records, want 12", got)
	}

	rest := servicetest.NewREST(t, messagesDesc, gateway.Backend{Package: "campaignmesh.delivery.v1", Conn: e.conn,
		RegisterREST: deliveryv1.RegisterMessagesServiceHandler})
	key := e.apiKey("t1", messagesSend)
	code, body := rest.Do("GetCampaignContent", &deliveryv1.GetCampaignContentRequest{CampaignId: campaign}, key)
	var got deliveryv1.CampaignContent
	if code != http.StatusOK || protojson.Unmarshal(body, &got) != nil || got.GetEtag() != "r2" || got.GetVariants()[1].GetTextBody() != "Changed" {
		t.Fatalf("GET content: %d %s", code, body)
	}
	in.Etag, in.Variants[1].TextBody = "r2", "Over REST"
	code, body = rest.Do("SetCampaignContent", &deliveryv1.SetCampaignContentRequest{CampaignId: campaign, Content: in}, key)
	if code != http.StatusOK || protojson.Unmarshal(body, &got) != nil || got.GetEtag() != "r3" || got.GetVariants()[1].GetTextBody() != "Over REST" {
		t.Fatalf("PUT content: %d %s", code, body)
	}
	code, body = rest.Do("ListSenderIdentities", &deliveryv1.ListSenderIdentitiesRequest{}, key)
	var list deliveryv1.ListSenderIdentitiesResponse
	if code != http.StatusOK || protojson.Unmarshal(body, &list) != nil || len(list.GetSenderIdentities()) != 1 {
		t.Fatalf("GET identities: %d %s", code, body)
	}
	if _, err := e.messages.DeleteSenderIdentity(ctx, &deliveryv1.DeleteSenderIdentityRequest{Id: id.GetId()}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("delete an identity in use: %v, want FAILED_PRECONDITION", err)
	}
}

// Previews: an attribute holding <script> is escaped in the HTML body; links are tracked and
// the pixel and unsubscribe link added; an SMS shows its length, encoding and segments; a
// preview for a contact needs contacts.read besides messages.send (it shows personal data).
func TestPreviewThroughTheAPI(t *testing.T) {
	t.Parallel()
	e := newMessagesEnv(t, 0)
	ctx := meshtest.Bearer(context.Background(), e.apiKey("t1", messagesSend))
	campaign := e.contentIn(t, "t1")
	p, err := e.messages.PreviewMessage(ctx, &deliveryv1.PreviewMessageRequest{CampaignId: campaign, Variant: "A",
		Sample: &deliveryv1.SampleContact{Attributes: map[string]string{"first_name": "<script>alert(1)</script>"}}})
	if err != nil || strings.Contains(p.GetHtmlBody(), "<script>") || !strings.Contains(p.GetHtmlBody(), "Hi &lt;script&gt;alert(1)&lt;/script&gt;") ||
		p.GetSubject() != "Hi <script>alert(1)</script>" || !strings.Contains(p.GetHtmlBody(), "https://t.example/o/preview.gif") ||
		p.GetListUnsubscribeUrl() != "https://t.example/u/preview" || p.GetChannel() != deliveryv1.Channel_CHANNEL_EMAIL {
		t.Fatalf("email preview: %v %v", p, err)
	}

	c := e.contactIn(t, "t1")
	_, err = e.messages.PreviewMessage(ctx, &deliveryv1.PreviewMessageRequest{CampaignId: campaign, Variant: "A", ContactId: c.ID})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("preview for a contact without contacts.read: %v, want PERMISSION_DENIED", err)
	}
	both := meshtest.Bearer(context.Background(), e.apiKey("t1", messagesSend, contactsRead))
	if p, err := e.messages.PreviewMessage(both, &deliveryv1.PreviewMessageRequest{CampaignId: campaign, Variant: "A", ContactId: c.ID}); err != nil || p.GetSubject() != "Hi there" {
		t.Fatalf("preview for a contact: %v %v", p, err)
	}
	if _, err := e.messages.PreviewMessage(ctx, &deliveryv1.PreviewMessageRequest{CampaignId: campaign, Variant: "Z"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("unknown variant: %v, want INVALID_ARGUMENT", err)
	}

	sms, err := e.m.CreateSenderIdentity(context.Background(), "t1", delivery.SenderIdentity{Channel: delivery.ChannelSMS, FromNumber: "+15550002222"})
	if err == nil {
		_, err = e.m.VerifySenderIdentity(context.Background(), "t1", sms.ID)
	}
	if err != nil {
		t.Fatal(err)
	}
	smsCampaign := newCampaignID()
	if _, err := e.m.SetCampaignContent(context.Background(), "t1", delivery.CampaignContent{CampaignID: smsCampaign, Channel: delivery.ChannelSMS,
		SenderIdentityID: sms.ID, Variants: []delivery.VariantContent{{Name: "A", SMSBody: "Hi {{first_name|there}}, 20% off"}}}, 0); err != nil {
		t.Fatal(err)
	}
	// Segments count the body as sent: with the Twilio adapter's 38-character reference
	// marker, 75 characters are one GSM-7 segment but two UCS-2 ones.
	for _, tc := range []struct {
		name, encoding string
		nonGSM         []string
		segments       int32
	}{{"Zoe", "GSM-7", nil, 1}, {"Zoë", "UCS-2", []string{"ë"}, 2}} {
		p, err := e.messages.PreviewMessage(ctx, &deliveryv1.PreviewMessageRequest{CampaignId: smsCampaign, Variant: "A",
			Sample: &deliveryv1.SampleContact{Attributes: map[string]string{"first_name": tc.name}}})
		body := "Hi " + tc.name + ", 20% off" + delivery.SMSStopFooter
		if err != nil || p.GetSmsBody() != body || p.GetSms().GetCharacters() != int32(len([]rune(body))) || p.GetSms().GetEncoding() != tc.encoding ||
			p.GetSms().GetSegments() != tc.segments || strings.Join(p.GetSms().GetNonGsmCharacters(), "") != strings.Join(tc.nonGSM, "") {
			t.Errorf("sms preview for %s: %v %v", tc.name, p, err)
		}
	}
}

// A test send through the API reaches the SendGrid stand-in through the real client, from the
// tenant's identity, with a test- reference and RFC 8058 headers; it is audited; the
// tenant's 10 a minute are enforced.
func TestSendTestMessageThroughTheAPI(t *testing.T) {
	t.Parallel()
	e := newMessagesEnv(t, 0)
	ctx := meshtest.Bearer(context.Background(), e.apiKey("t1", messagesSend))
	campaign := e.contentIn(t, "t1")
	before, err := e.d.Outbox().Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	req := &deliveryv1.SendTestMessageRequest{CampaignId: campaign, Variant: "A", To: "qa@shop.example",
		Sample: &deliveryv1.SampleContact{Attributes: map[string]string{"first_name": "Tess"}}}
	sent, err := e.messages.SendTestMessage(ctx, req)
	if err != nil || !strings.HasPrefix(sent.GetRef(), "test-") || sent.GetProviderMessageId() == "" {
		t.Fatalf("test send: %v %v", sent, err)
	}
	msgs := e.mail.Messages()
	if len(msgs) != 1 || msgs[0].To != "qa@shop.example" || msgs[0].Subject != "Hi Tess" || msgs[0].CustomArgs[sendgrid.RefArg] != sent.GetRef() ||
		msgs[0].Headers["List-Unsubscribe-Post"] != "List-Unsubscribe=One-Click" || !strings.Contains(msgs[0].From, "@shop.example") {
		t.Fatalf("outbox: %+v", msgs)
	}
	if after, err := e.d.Outbox().Pending(context.Background()); err != nil || after != before+1 {
		t.Errorf("audit records %d → %d (%v), want one more", before, after, err)
	}
	for range delivery.DefaultTestSendRate - 1 {
		if _, err := e.messages.SendTestMessage(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.messages.SendTestMessage(ctx, req); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("test send over the rate: %v, want RESOURCE_EXHAUSTED", err)
	}
	if e.mail.Total() != delivery.DefaultTestSendRate {
		t.Errorf("outbox holds %d, want %d", e.mail.Total(), delivery.DefaultTestSendRate)
	}
}

// Hostile but well-formed input to MessagesService — extreme amounts, unknown enum numbers,
// oversized and malformed templates, garbage ids, times and addresses — is refused as bad
// input or answered, never INTERNAL.
func TestMessagesHostileInputIsNeverInternal(t *testing.T) {
	t.Parallel()
	e := newMessagesEnv(t, 1000)
	ctx := meshtest.Bearer(context.Background(), e.apiKey("t1", messagesSend, deliverySettings, contactsRead))
	id := e.verifiedIn(t, "t1")
	campaign := e.contentIn(t, "t1")
	long := strings.Repeat("é", 100_000)
	check := func(what string, err error) {
		t.Helper()
		switch status.Code(err) {
		case codes.OK, codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition:
		default:
			t.Errorf("%s: %v, want OK or a refusal of the input", what, err)
		}
	}
	content := func(edit func(*deliveryv1.CampaignContent)) *deliveryv1.CampaignContent {
		c := newContent(id)
		edit(c)
		return c
	}
	many := make([]*deliveryv1.VariantContent, 5000)
	for i := range many {
		many[i] = &deliveryv1.VariantContent{Name: "v", Subject: "s", TextBody: "t"}
	}
	for name, c := range map[string]*deliveryv1.CampaignContent{
		"max cost":          content(func(c *deliveryv1.CampaignContent) { c.MessageCost.AmountMicros = math.MaxInt64 }),
		"min cost":          content(func(c *deliveryv1.CampaignContent) { c.ClickCost.AmountMicros = math.MinInt64 }),
		"long currency":     content(func(c *deliveryv1.CampaignContent) { c.ClickCost.CurrencyCode = long }),
		"unknown channel":   content(func(c *deliveryv1.CampaignContent) { c.Channel = 999 }),
		"negative channel":  content(func(c *deliveryv1.CampaignContent) { c.Channel = -1 }),
		"garbage identity":  content(func(c *deliveryv1.CampaignContent) { c.SenderIdentityId = "'; DROP TABLE sender_identities; --" }),
		"missing identity":  content(func(c *deliveryv1.CampaignContent) { c.SenderIdentityId = "00000000-0000-4000-8000-000000000000" }),
		"garbage segment":   content(func(c *deliveryv1.CampaignContent) { c.SegmentId = long }),
		"long quiet hours":  content(func(c *deliveryv1.CampaignContent) { c.QuietHoursStart = long }),
		"time 99:99":        content(func(c *deliveryv1.CampaignContent) { c.SendAtLocalTime = "99:99" }),
		"nil variant":       content(func(c *deliveryv1.CampaignContent) { c.Variants = append(c.Variants, nil) }),
		"many variants":     content(func(c *deliveryv1.CampaignContent) { c.Variants = many }),
		"long name":         content(func(c *deliveryv1.CampaignContent) { c.Variants[0].Name = long }),
		"long subject":      content(func(c *deliveryv1.CampaignContent) { c.Variants[0].Subject = long }),
		"nul in body":       content(func(c *deliveryv1.CampaignContent) { c.Variants[0].HtmlBody = "a\x00b {{first_name}}" }),
		"nested braces":     content(func(c *deliveryv1.CampaignContent) { c.Variants[0].HtmlBody = "{{{{first_name}}}}" }),
		"open placeholders": content(func(c *deliveryv1.CampaignContent) { c.Variants[0].TextBody = strings.Repeat("{{", 10_000) }),
		"sms on email":      content(func(c *deliveryv1.CampaignContent) { c.Variants[0].SmsBody = long }),
		"output only":       content(func(c *deliveryv1.CampaignContent) { c.CampaignId, c.Etag = "x", "" }),
	} {
		_, err := e.messages.SetCampaignContent(ctx, &deliveryv1.SetCampaignContentRequest{CampaignId: newCampaignID(), Content: c})
		check("content with "+name, err)
	}
	for _, cid := range []string{"", "x", long, "00000000-0000-0000-0000-000000000000", "'; DROP TABLE campaign_contents; --"} {
		_, err := e.messages.SetCampaignContent(ctx, &deliveryv1.SetCampaignContentRequest{CampaignId: cid, Content: newContent(id)})
		check("set content of "+cid[:min(len(cid), 20)], err)
		_, err = e.messages.GetCampaignContent(ctx, &deliveryv1.GetCampaignContentRequest{CampaignId: cid})
		check("get content of "+cid[:min(len(cid), 20)], err)
		_, err = e.messages.VerifySenderIdentity(ctx, &deliveryv1.VerifySenderIdentityRequest{Id: cid})
		check("verify "+cid[:min(len(cid), 20)], err)
		_, err = e.messages.DeleteSenderIdentity(ctx, &deliveryv1.DeleteSenderIdentityRequest{Id: cid})
		check("delete "+cid[:min(len(cid), 20)], err)
		_, err = e.messages.PreviewMessage(ctx, &deliveryv1.PreviewMessageRequest{CampaignId: campaign, Variant: cid, ContactId: cid})
		check("preview for "+cid[:min(len(cid), 20)], err)
	}
	attrs := map[string]string{}
	for i := range 5000 {
		attrs[strings.Repeat("a", 1+i%60)+string(rune('a'+i%26))+strings.Repeat("b", i/1500)] = "v"
	}
	for name, s := range map[string]*deliveryv1.SampleContact{
		"many attributes": {Attributes: attrs},
		"long attribute":  {Attributes: map[string]string{"first_name": long, long: "v"}},
		"long email":      {Email: long},
	} {
		_, err := e.messages.PreviewMessage(ctx, &deliveryv1.PreviewMessageRequest{CampaignId: campaign, Variant: "A", Sample: s})
		check("preview with "+name, err)
	}
	for _, to := range []string{long, "a@b", "+1", "\x00", "<script>@x.io"} {
		_, err := e.messages.SendTestMessage(ctx, &deliveryv1.SendTestMessageRequest{CampaignId: campaign, Variant: "A", To: to})
		check("test send to "+to[:min(len(to), 20)], err)
	}
	for name, s := range map[string]*deliveryv1.SenderIdentity{
		"unknown channel": {Channel: 77, FromEmail: "a@b.io"},
		"long name":       {Channel: deliveryv1.Channel_CHANNEL_EMAIL, FromEmail: "a@b.io", FromName: long},
		"header in name":  {Channel: deliveryv1.Channel_CHANNEL_EMAIL, FromEmail: "a@b.io", FromName: "x\r\nBcc: y@z.io"},
		"long sid":        {Channel: deliveryv1.Channel_CHANNEL_SMS, MessagingServiceSid: long},
		"both sms":        {Channel: deliveryv1.Channel_CHANNEL_SMS, MessagingServiceSid: "MG0123456789abcdef0123456789abcdef", FromNumber: "+15550001111"},
		"email on sms":    {Channel: deliveryv1.Channel_CHANNEL_SMS, FromNumber: "+15550001111", FromEmail: "a@b.io"},
		"nil":             nil,
	} {
		_, err := e.messages.CreateSenderIdentity(ctx, &deliveryv1.CreateSenderIdentityRequest{SenderIdentity: s})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("identity with %s: %v, want INVALID_ARGUMENT", name, err)
		}
	}
}
