package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/quota"
	sgstandin "github.com/campaignmesh/campaignmesh/internal/standin/sendgrid"
	twstandin "github.com/campaignmesh/campaignmesh/internal/standin/twilio"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
	"github.com/campaignmesh/campaignmesh/services/delivery/sendgrid"
	"github.com/campaignmesh/campaignmesh/services/delivery/twilio"
)

const contentCampaign = "0b5e3f4c-8d2a-4c7e-9a61-3f0c2d1e4b5a"

// emailContent is valid email content of two variants using identity.
func emailContent(identity string) delivery.CampaignContent {
	return delivery.CampaignContent{
		CampaignID: contentCampaign, Channel: delivery.ChannelEmail, SenderIdentityID: identity,
		MessageCost: delivery.Money{Micros: 1_000, Currency: "EUR"}, ClickCost: delivery.Money{Micros: 50_000, Currency: "EUR"},
		QuietHours: delivery.QuietHours{Start: 21 * time.Hour, End: 8 * time.Hour},
		Variants: []delivery.VariantContent{
			{Name: "A", Subject: "Hi {{first_name|there}}", HTMLBody: `<p>Hello {{first_name|there}}, <a href="https://shop.example/sale">sale</a></p>`, TextBody: "Hello {{first_name|there}}"},
			{Name: "B", Subject: "Sale for {{first_name|you}}", TextBody: "Sale: https://shop.example/sale {{unsubscribe_url}}"},
		},
	}
}

// Every limit and rule of content is checked before the store is reached (a nil store
// proves it), and all violations come back at once.
func TestCampaignContentValidation(t *testing.T) {
	m := delivery.NewMessages(delivery.MessagesConfig{Links: testLinks{}})
	id := "7d0f2b8e-1c3a-4f5e-8b9d-0a1b2c3d4e5f"
	tooMany := make([]delivery.VariantContent, delivery.MaxContentVariants+1)
	for i := range tooMany {
		tooMany[i] = delivery.VariantContent{Name: fmt.Sprint("v", i), Subject: "s", TextBody: "t"}
	}
	for name, tc := range map[string]struct {
		edit func(*delivery.CampaignContent)
		want []string
	}{
		"no channel":       {func(c *delivery.CampaignContent) { c.Channel = "" }, []string{"content.channel"}},
		"segment not uuid": {func(c *delivery.CampaignContent) { c.SegmentID = "all" }, []string{"content.segment_id"}},
		"no identity":      {func(c *delivery.CampaignContent) { c.SenderIdentityID = "" }, []string{"content.sender_identity_id"}},
		"quiet hours":      {func(c *delivery.CampaignContent) { c.QuietHours.End = c.QuietHours.Start }, []string{"content.quiet_hours"}},
		"send at":          {func(c *delivery.CampaignContent) { d := 25 * time.Hour; c.SendAtLocalTime = &d }, []string{"content.send_at_local_time"}},
		"cost currency":    {func(c *delivery.CampaignContent) { c.ClickCost.Currency = "euro" }, []string{"content.click_cost.currency"}},
		"negative cost":    {func(c *delivery.CampaignContent) { c.MessageCost.Micros = -1 }, []string{"content.message_cost.micros"}},
		"stop footer":      {func(c *delivery.CampaignContent) { c.NoSMSStopFooter = true }, []string{"content.no_sms_stop_footer"}},
		"no variants":      {func(c *delivery.CampaignContent) { c.Variants = nil }, []string{"content.variants"}},
		"too many":         {func(c *delivery.CampaignContent) { c.Variants = tooMany }, []string{"content.variants"}},
		"duplicate name":   {func(c *delivery.CampaignContent) { c.Variants[1].Name = "A" }, []string{"content.variants[1].name"}},
		"bad name":         {func(c *delivery.CampaignContent) { c.Variants[0].Name = "-a b" }, []string{"content.variants[0].name"}},
		"subject limit": {func(c *delivery.CampaignContent) {
			c.Variants[0].Subject = strings.Repeat("s", delivery.MaxSubjectLen+1)
		},
			[]string{"content.variants[0].subject"}},
		"subject line break": {func(c *delivery.CampaignContent) { c.Variants[0].Subject = "a\r\nBcc: x@y.z" }, []string{"content.variants[0].subject"}},
		"html limit": {func(c *delivery.CampaignContent) {
			c.Variants[0].HTMLBody = strings.Repeat("h", delivery.MaxHTMLBodyLen+1)
		},
			[]string{"content.variants[0].html_body"}},
		"text limit": {func(c *delivery.CampaignContent) {
			c.Variants[0].TextBody = strings.Repeat("t", delivery.MaxTextBodyLen+1)
		},
			[]string{"content.variants[0].text_body"}},
		"nul in body":      {func(c *delivery.CampaignContent) { c.Variants[0].HTMLBody = "a\x00b" }, []string{"content.variants[0].html_body"}},
		"no body":          {func(c *delivery.CampaignContent) { c.Variants[1].TextBody = "" }, []string{"content.variants[1]"}},
		"sms body on mail": {func(c *delivery.CampaignContent) { c.Variants[1].SMSBody = "x" }, []string{"content.variants[1].sms_body"}},
		"unknown placeholder": {func(c *delivery.CampaignContent) {
			c.Variants[0].HTMLBody = "<p>{{Name}}</p>"
			c.Variants[1].Subject = "{{x"
		},
			[]string{"content.variants[0].html_body", "content.variants[1].subject"}},
		"sms limit": {func(c *delivery.CampaignContent) {
			c.Channel = delivery.ChannelSMS
			c.Variants = []delivery.VariantContent{{Name: "A", SMSBody: strings.Repeat("ü", delivery.MaxSMSBodyLen+1)}}
		}, []string{"content.variants[0].sms_body"}},
		"email fields on sms": {func(c *delivery.CampaignContent) {
			c.Channel = delivery.ChannelSMS
			c.Variants = []delivery.VariantContent{{Name: "A", SMSBody: "hi", Subject: "s"}}
		}, []string{"content.variants[0]"}},
	} {
		t.Run(name, func(t *testing.T) {
			c := emailContent(id)
			tc.edit(&c)
			_, err := m.SetCampaignContent(context.Background(), "t1", c, 0)
			if got := violations(t, err); !slices.Equal(got, tc.want) {
				t.Errorf("violations %v, want %v", got, tc.want)
			}
		})
	}
	_, err := m.SetCampaignContent(context.Background(), "", emailContent(id), 0)
	if !apperr.HasCode(err, apperr.PermissionDenied) {
		t.Errorf("no tenant: %v", err)
	}
}

type messagesRig struct {
	store *postgres.Store
	m     *delivery.Messages
	aud   *delivery.Audiences
	now   atomic.Int64
	mail  *sgstandin.Server
	sms   *twstandin.Server
	// quotas are the tenants' quotas test sends apply (none until a test applies some).
	quotas *quota.View
}

func newMessagesRig(tb testing.TB) *messagesRig {
	tb.Helper()
	store, err := postgres.Open(context.Background(), pgtest.NewDatabase(tb)+"&pool_max_conns=16")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(store.Close)
	r := &messagesRig{store: store, aud: delivery.NewAudiences(store, nil), quotas: quota.NewView(nil)}
	r.now.Store(time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC).UnixNano())

	r.mail, err = sgstandin.New(sgstandin.Config{APIKey: sgKey})
	if err != nil {
		tb.Fatal(err)
	}
	mailSrv := httptest.NewServer(r.mail)
	tb.Cleanup(func() { r.mail.Close(); mailSrv.Close() })
	sg, err := sendgrid.New(sendgrid.Config{BaseURL: mailSrv.URL, APIKey: sgKey, Timeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	const account, token = "AC00000000000000000000000000000017", "tw-token"
	r.sms, err = twstandin.New(twstandin.Config{AccountSID: account, AuthToken: token})
	if err != nil {
		tb.Fatal(err)
	}
	smsSrv := httptest.NewServer(r.sms)
	tb.Cleanup(func() { r.sms.Close(); smsSrv.Close() })
	tw, err := twilio.New(twilio.Config{BaseURL: smsSrv.URL, AccountSID: account, Password: token, Timeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	twp, err := twilio.NewProvider(tw, twilio.ProviderConfig{From: "+15550001111"})
	if err != nil {
		tb.Fatal(err)
	}
	r.m = delivery.NewMessages(delivery.MessagesConfig{
		Store: store, Contacts: store, Segments: store, Links: testLinks{},
		Providers: map[delivery.Channel]delivery.Provider{
			delivery.ChannelEmail: sendgrid.NewProvider(sg, sendgrid.ProviderConfig{From: sendgrid.Address{Email: "default@platform.example"}}),
			delivery.ChannelSMS:   twp,
		},
		TestSendsPerMinute: 3,
		Now:                func() time.Time { return time.Unix(0, r.now.Load()) },
		Quotas:             r.quotas,
	})
	return r
}

func (r *messagesRig) identity(tb testing.TB, tenant string, s delivery.SenderIdentity, verify bool) delivery.SenderIdentity {
	tb.Helper()
	ctx := context.Background()
	s, err := r.m.CreateSenderIdentity(ctx, tenant, s)
	if err != nil {
		tb.Fatal(err)
	}
	if verify {
		if s, err = r.m.VerifySenderIdentity(ctx, tenant, s.ID); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

var mailIdentity = delivery.SenderIdentity{Channel: delivery.ChannelEmail, FromEmail: "News@Shop.example", FromName: "Shop News", ReplyTo: "help@shop.example"}

// Content's life: an unverified identity cannot send (FAILED_PRECONDITION) and one of the
// other channel is refused; saved content gets revision 1; saving it again changes nothing;
// a change under the current etag is revision 2, under a stale one ABORTED; another tenant
// sees none of it; an identity in use cannot be deleted.
func TestCampaignContentLifecycle(t *testing.T) {
	t.Parallel()
	r := newMessagesRig(t)
	ctx := context.Background()
	unverified := r.identity(t, "t1", mailIdentity, false)
	if unverified.FromEmail != "news@shop.example" || unverified.Verified {
		t.Fatalf("created %+v", unverified)
	}
	if _, err := r.m.SetCampaignContent(ctx, "t1", emailContent(unverified.ID), 0); !apperr.HasCode(err, apperr.FailedPrecondition) {
		t.Fatalf("content with an unverified identity: %v, want FAILED_PRECONDITION", err)
	}
	sms := r.identity(t, "t1", delivery.SenderIdentity{Channel: delivery.ChannelSMS, MessagingServiceSID: "MG0123456789abcdef0123456789abcdef"}, true)
	if _, err := r.m.SetCampaignContent(ctx, "t1", emailContent(sms.ID), 0); !slices.Equal(violations(t, err), []string{"content.sender_identity_id"}) {
		t.Fatalf("email content with an SMS identity: %v", err)
	}
	id := r.identity(t, "t1", mailIdentity, true)
	if _, err := r.m.SetCampaignContent(ctx, "t2", emailContent(id.ID), 0); !slices.Equal(violations(t, err), []string{"content.sender_identity_id"}) {
		t.Fatalf("another tenant's identity: %v", err)
	}

	seg, err := r.aud.CreateSegment(ctx, "t1", delivery.Segment{Name: "pro", Filter: delivery.Filter{
		Attributes: []delivery.AttributeCondition{{Key: "plan", Op: delivery.AttrEquals, Values: []string{"pro"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := r.aud.CreateSegment(ctx, "t2", delivery.Segment{Name: "pro", Filter: seg.Filter})
	if err != nil {
		t.Fatal(err)
	}
	withSegment := emailContent(id.ID)
	withSegment.SegmentID = other.ID
	if _, err := r.m.SetCampaignContent(ctx, "t1", withSegment, 0); !slices.Equal(violations(t, err), []string{"content.segment_id"}) {
		t.Fatalf("another tenant's segment: %v", err)
	}
	withSegment.SegmentID = seg.ID
	c1, err := r.m.SetCampaignContent(ctx, "t1", withSegment, 0)
	if err != nil || c1.Revision != 1 || delivery.ContentEtag(c1) != "r1" || len(c1.Variants) != 2 || c1.ClickCost.Micros != 50_000 {
		t.Fatalf("first save: %+v %v", c1, err)
	}
	if c1.SegmentID != seg.ID {
		t.Fatalf("segment %q, want %q", c1.SegmentID, seg.ID)
	}
	again, err := r.m.SetCampaignContent(ctx, "t1", withSegment, 1)
	if err != nil || again.Revision != 1 || !again.UpdateTime.Equal(c1.UpdateTime) {
		t.Fatalf("saving the same content again: %+v %v, want revision 1 unchanged", again, err)
	}
	changed := emailContent(id.ID)
	changed.Variants[0].Subject = "New subject"
	c2, err := r.m.SetCampaignContent(ctx, "t1", changed, 1)
	if err != nil || c2.Revision != 2 || c2.Variants[0].Subject != "New subject" {
		t.Fatalf("change: %+v %v", c2, err)
	}
	changed.Variants[0].Subject = "Lost update"
	if _, err := r.m.SetCampaignContent(ctx, "t1", changed, 1); !apperr.HasCode(err, apperr.Conflict) {
		t.Fatalf("stale etag: %v, want ABORTED", err)
	}
	got, err := r.m.GetCampaignContent(ctx, "t1", contentCampaign)
	if err != nil || got.Revision != 2 || got.QuietHours != c1.QuietHours || got.Variants[1].TextBody != c1.Variants[1].TextBody {
		t.Fatalf("get: %+v %v", got, err)
	}
	if _, err := r.m.GetCampaignContent(ctx, "t2", contentCampaign); !apperr.HasCode(err, apperr.NotFound) {
		t.Fatalf("another tenant's content: %v, want NOT_FOUND", err)
	}
	msg, click, err := r.m.Costs(ctx, "t1", contentCampaign)
	if err != nil || msg != (delivery.Money{Micros: 1_000, Currency: "EUR"}) || click != (delivery.Money{Micros: 50_000, Currency: "EUR"}) {
		t.Fatalf("pricing: %v %v %v", msg, click, err)
	}
	if _, ok, err := r.m.Plan(ctx, "t1", "11111111-2222-4333-8444-555555555555"); ok || err != nil {
		t.Fatalf("plan of a campaign without content: %v %v", ok, err)
	}
	if err := r.m.DeleteSenderIdentity(ctx, "t1", id.ID); !apperr.HasCode(err, apperr.FailedPrecondition) {
		t.Fatalf("delete an identity in use: %v, want FAILED_PRECONDITION", err)
	}
	if err := r.m.DeleteSenderIdentity(ctx, "t1", unverified.ID); err != nil {
		t.Fatalf("delete an unused identity: %v", err)
	}
	ids, err := r.m.ListSenderIdentities(ctx, "t1")
	if err != nil || len(ids) != 2 || ids[0].ID != sms.ID || ids[1].ID != id.ID {
		t.Fatalf("list: %+v %v", ids, err)
	}
}

// Compose renders a recipient's variant for its contact with the tenant's identity and links
// under the row's id; it keeps using its parsed content until the revision changes (seen
// within a second); an erased contact is ErrContactGone.
func TestCompose(t *testing.T) {
	t.Parallel()
	r := newMessagesRig(t)
	ctx := context.Background()
	id := r.identity(t, "t1", mailIdentity, true)
	if _, err := r.m.SetCampaignContent(ctx, "t1", emailContent(id.ID), 0); err != nil {
		t.Fatal(err)
	}
	c, err := r.aud.CreateContact(ctx, "t1", delivery.Contact{Email: "ann@example.com", Attributes: map[string]string{"first_name": "Ann <b>"},
		Consent: delivery.Consents{Email: delivery.Consent{State: delivery.ConsentGranted, Source: "form"}}})
	if err != nil {
		t.Fatal(err)
	}
	rec := delivery.Recipient{ID: "1001", TenantID: "t1", CampaignID: contentCampaign, ContactID: c.ID, Variant: "A", Address: c.Email}
	msg, err := r.m.Compose(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "Hi Ann <b>" || !strings.Contains(msg.HTML, "Hello Ann &lt;b&gt;") ||
		!strings.Contains(msg.HTML, `href="https://t.example/c/1001?u=https%3A%2F%2Fshop.example%2Fsale"`) ||
		!strings.Contains(msg.HTML, "https://t.example/o/1001.gif") || msg.ListUnsubscribeURL != "https://t.example/u/1001" ||
		msg.Text != "Hello Ann <b>\n\nUnsubscribe: https://t.example/u/1001" ||
		msg.From != (delivery.MessageFrom{Email: "news@shop.example", Name: "Shop News", ReplyTo: "help@shop.example"}) {
		t.Fatalf("composed %+v", msg)
	}
	b := rec
	b.Variant = "B"
	if msg, err := r.m.Compose(ctx, b); err != nil || msg.HTML != "" || msg.Text != "Sale: https://shop.example/sale https://t.example/u/1001" {
		t.Fatalf("variant B: %+v %v", msg, err)
	}

	changed := emailContent(id.ID)
	changed.Variants[0].Subject = "Changed {{first_name}}"
	if _, err := r.m.SetCampaignContent(ctx, "t1", changed, 0); err != nil {
		t.Fatal(err)
	}
	if msg, err := r.m.Compose(ctx, rec); err != nil || msg.Subject != "Changed Ann <b>" {
		t.Fatalf("after a change through the same Messages: %q %v", msg.Subject, err)
	}
	// A change by another replica is seen once the cache's recheck time has passed.
	other := delivery.NewMessages(delivery.MessagesConfig{Store: r.store, Contacts: r.store, Links: testLinks{}})
	changed.Variants[0].Subject = "Replica {{first_name}}"
	if _, err := other.SetCampaignContent(ctx, "t1", changed, 0); err != nil {
		t.Fatal(err)
	}
	if msg, _ := r.m.Compose(ctx, rec); msg.Subject != "Changed Ann <b>" {
		t.Fatalf("within the recheck time: %q, want the cached subject", msg.Subject)
	}
	r.now.Add(int64(2 * time.Second))
	if msg, err := r.m.Compose(ctx, rec); err != nil || msg.Subject != "Replica Ann <b>" {
		t.Fatalf("after the recheck time: %q %v", msg.Subject, err)
	}

	// Unsubscribed since the recipients were resolved: skipped, not retried.
	if _, err := r.aud.SetConsent(ctx, "t1", c.ID, delivery.ChannelEmail, delivery.ConsentRevoked, "unsubscribe"); err != nil {
		t.Fatal(err)
	}
	var skip *delivery.SkipError
	if _, err := r.m.Compose(ctx, rec); !errors.As(err, &skip) || skip.Reason != delivery.SkipNoConsent {
		t.Fatalf("revoked consent: %v, want a SkipError for no consent", err)
	}
	if _, err := r.aud.EraseContact(ctx, "t1", []delivery.Identifier{{Kind: delivery.IdentifierEmail, Value: c.Email}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.m.Compose(ctx, rec); !errors.Is(err, delivery.ErrContactGone) || !errors.As(err, &skip) || skip.Reason != delivery.SkipContactGone {
		t.Fatalf("erased contact: %v, want ErrContactGone as a skip", err)
	}
	rec.Variant = "C"
	if _, err := r.m.Compose(ctx, rec); err == nil {
		t.Fatal("a variant without content composed")
	}
}

func smsContent(identity string) delivery.CampaignContent {
	return delivery.CampaignContent{CampaignID: contentCampaign, Channel: delivery.ChannelSMS, SenderIdentityID: identity,
		Variants: []delivery.VariantContent{{Name: "A", SMSBody: "Hi {{first_name|there}}, 20% off today"}}}
}

// An SMS preview gets the STOP footer unless the content turns it off; sample values stand in
// for a contact.
func TestPreviewSMS(t *testing.T) {
	t.Parallel()
	r := newMessagesRig(t)
	ctx := context.Background()
	id := r.identity(t, "t1", delivery.SenderIdentity{Channel: delivery.ChannelSMS, FromNumber: "+1 555 000 2222"}, true)
	if _, err := r.m.SetCampaignContent(ctx, "t1", smsContent(id.ID), 0); err != nil {
		t.Fatal(err)
	}
	in := delivery.PreviewInput{CampaignID: contentCampaign, Variant: "A", Sample: delivery.Contact{Attributes: map[string]string{"first_name": "Zoë"}}}
	p, err := r.m.PreviewMessage(ctx, "t1", in)
	if want := "Hi Zoë, 20% off today" + delivery.SMSStopFooter; err != nil || p.SMS != want || p.SMSLength != len([]rune(want)) {
		t.Fatalf("preview %+v %v", p, err)
	}
	off := smsContent(id.ID)
	off.NoSMSStopFooter = true
	if _, err := r.m.SetCampaignContent(ctx, "t1", off, 0); err != nil {
		t.Fatal(err)
	}
	if p, err := r.m.PreviewMessage(ctx, "t1", in); err != nil || p.SMS != "Hi Zoë, 20% off today" {
		t.Fatalf("preview without footer %+v %v", p, err)
	}
	in.Variant = "Z"
	if _, err := r.m.PreviewMessage(ctx, "t1", in); !slices.Equal(violations(t, err), []string{"variant"}) {
		t.Fatalf("unknown variant: %v", err)
	}
}

// A test send goes through the channel's real client to the stand-in, from the tenant's
// identity, with a "test-" reference and the one-click unsubscribe headers, and never into the
// ledger; the tenant's rate is enforced.
func TestSendTestMessage(t *testing.T) {
	t.Parallel()
	r := newMessagesRig(t)
	ctx := context.Background()
	id := r.identity(t, "t1", mailIdentity, true)
	if _, err := r.m.SetCampaignContent(ctx, "t1", emailContent(id.ID), 0); err != nil {
		t.Fatal(err)
	}
	in := delivery.TestSend{To: "QA@Shop.example", PreviewInput: delivery.PreviewInput{CampaignID: contentCampaign, Variant: "A",
		Sample: delivery.Contact{Attributes: map[string]string{"first_name": "Tess"}}}}
	sent, err := r.m.SendTestMessage(ctx, "t1", in)
	if err != nil || !strings.HasPrefix(sent.Ref, "test-") || sent.ProviderID == "" {
		t.Fatalf("test send: %+v %v", sent, err)
	}
	msgs := r.mail.Messages()
	if len(msgs) != 1 {
		t.Fatalf("outbox holds %d messages", len(msgs))
	}
	m := msgs[0]
	if m.To != "qa@shop.example" || !strings.Contains(m.From, "news@shop.example") || m.Subject != "Hi Tess" ||
		m.CustomArgs[sendgrid.RefArg] != sent.Ref || m.Headers["List-Unsubscribe"] != "<https://t.example/u/"+sent.Ref+">" ||
		m.Headers["List-Unsubscribe-Post"] != "List-Unsubscribe=One-Click" {
		t.Fatalf("sent %+v", m)
	}
	var rows int
	if err := r.store.Pool().QueryRow(ctx, `SELECT count(*) FROM ledger`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("ledger rows %d %v, want none", rows, err)
	}
	for _, bad := range []string{"", "not an address", "+15550001234"} {
		in.To = bad
		if _, err := r.m.SendTestMessage(ctx, "t1", in); !slices.Equal(violations(t, err), []string{"to"}) && !slices.Equal(violations(t, err), []string{"to", "to"}) {
			t.Errorf("to %q: %v", bad, err)
		}
	}
	in.To = "qa@shop.example"
	for range 2 {
		if _, err := r.m.SendTestMessage(ctx, "t1", in); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.m.SendTestMessage(ctx, "t1", in); !apperr.HasCode(err, apperr.ResourceExhausted) {
		t.Fatalf("fourth test send in a minute at 3/min: %v, want RESOURCE_EXHAUSTED", err)
	}

	// SMS through the Twilio stand-in, from the identity's number.
	smsID := r.identity(t, "t2", delivery.SenderIdentity{Channel: delivery.ChannelSMS, FromNumber: "+15550002222"}, true)
	if _, err := r.m.SetCampaignContent(ctx, "t2", smsContent(smsID.ID), 0); err != nil {
		t.Fatal(err)
	}
	sent, err = r.m.SendTestMessage(ctx, "t2", delivery.TestSend{To: "+1 555 000 3333", PreviewInput: delivery.PreviewInput{CampaignID: contentCampaign, Variant: "A"}})
	if err != nil {
		t.Fatal(err)
	}
	sms := r.sms.Messages()
	if len(sms) != 1 || sms[0].To != "+15550003333" || sms[0].From != "+15550002222" ||
		sms[0].Body != "Hi there, 20% off today"+delivery.SMSStopFooter+twilio.Marker(sent.Ref) {
		t.Fatalf("sms outbox %+v", sms)
	}
}

// BenchmarkCompose measures Compose over real PostgreSQL (one contact read per message, the
// content from the cache), in parallel as the sender calls it.
func BenchmarkCompose(b *testing.B) {
	r := newMessagesRig(b)
	ctx := context.Background()
	id := r.identity(b, "t1", mailIdentity, true)
	c := emailContent(id.ID)
	c.Variants[0].HTMLBody = strings.Repeat(`<p>Hello {{first_name|there}}, see <a href="https://shop.example/sale?x=1">our sale</a> in {{city|your city}}.</p>`, 20)
	if _, err := r.m.SetCampaignContent(ctx, "t1", c, 0); err != nil {
		b.Fatal(err)
	}
	const n = 1000
	recs := make([]delivery.Recipient, n)
	for i := range recs {
		ct, err := r.aud.CreateContact(ctx, "t1", delivery.Contact{Email: fmt.Sprintf("p%d@example.com", i), Attributes: map[string]string{"first_name": "P", "city": "Lyon"},
			Consent: delivery.Consents{Email: delivery.Consent{State: delivery.ConsentGranted, Source: "form"}}})
		if err != nil {
			b.Fatal(err)
		}
		recs[i] = delivery.Recipient{ID: fmt.Sprint(i + 1), TenantID: "t1", CampaignID: contentCampaign, ContactID: ct.ID, Variant: "A"}
	}
	var next atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.m.Compose(ctx, recs[next.Add(1)%n]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkSenderWithCompose measures a whole send with real content: the Sender claiming
// ledger rows, Compose reading each contact and rendering its variant (links, pixel,
// unsubscribe), the SendGrid client handing each message to the stand-in, one outcome write
// per recipient — 20,000 recipients in two variants, everything on real PostgreSQL.
func BenchmarkSenderWithCompose(b *testing.B) {
	const n = 20_000
	ctx := context.Background()
	for range b.N {
		b.StopTimer()
		l, _, url := openLedgerURL(b)
		store, err := postgres.Open(ctx, url+"&pool_max_conns=32")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(store.Close)
		m := delivery.NewMessages(delivery.MessagesConfig{Store: store, Contacts: store, Links: testLinks{}})
		id, err := m.CreateSenderIdentity(ctx, "t1", mailIdentity)
		if err == nil {
			_, err = m.VerifySenderIdentity(ctx, "t1", id.ID)
		}
		c := emailContent(id.ID)
		c.Variants[0].Name, c.Variants[1].Name = "a", "b"
		if err == nil {
			_, err = m.SetCampaignContent(ctx, "t1", c, 0)
		}
		if err != nil {
			b.Fatal(err)
		}
		us := make([]delivery.ContactUpsert, n)
		for i := range us {
			us[i] = delivery.ContactUpsert{Email: address(i), Attributes: map[string]string{"first_name": fmt.Sprint("P", i)}}
		}
		res, err := store.UpsertContacts(ctx, "t1", us, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		rs := make([]delivery.NewRecipient, n)
		for i := range rs {
			rs[i] = delivery.NewRecipient{ContactID: res[i].ID, Address: address(i)}
		}
		if _, err := l.AddRecipients(ctx, "t1", contentCampaign, twoVariants, rs); err != nil {
			b.Fatal(err)
		}
		r := newRig(b, sgstandin.Config{}, 10*time.Second)
		r.ledger = l
		s := r.sender(b, "bench", func(cfg *delivery.SenderConfig) { cfg.Concurrency = 64; cfg.Metrics = nil; cfg.Compose = m.Compose })
		b.StartTimer()
		start := time.Now()
		if err := s.Run(ctx, "t1", contentCampaign); err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		msgs := r.outbox.Messages()
		if len(msgs) != n || !strings.Contains(msgs[0].HTML+msgs[0].Text, "https://t.example/u/") {
			b.Fatalf("outbox holds %d messages", len(msgs))
		}
		b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
	}
}
