package delivery

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/quota"
)

// Limits of a campaign's content.
const (
	// MaxSubjectLen is RFC 5322's line limit, in bytes.
	MaxSubjectLen  = 998
	MaxHTMLBodyLen = 256 << 10
	MaxTextBodyLen = 64 << 10
	// MaxSMSBodyLen is Twilio's body limit, in characters.
	MaxSMSBodyLen       = 1600
	MaxContentVariants  = 20
	MaxCostMicros       = 1_000_000_000_000 // a million in any currency, per message or click
	DefaultTestSendRate = 10                // test sends per tenant per minute
	// contentRecheck is how long Compose trusts a cached content without asking the store
	// whether its revision changed.
	contentRecheck = time.Second
)

var (
	variantName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	currency    = regexp.MustCompile(`^[A-Z]{3}$`)
)

// Money is an amount in micros (millionths) of an ISO 4217 currency, as analytics counts the
// value of events. The zero value is no cost.
type Money struct {
	Micros   int64
	Currency string
}

// VariantContent is what one variant of a campaign sends: an email's subject and bodies, or
// an SMS body. Each is a template (see ParseTemplate).
type VariantContent struct {
	// Name is the campaign's variant name (campaigns owns the list; names are checked
	// against it when the campaign is sent, not here).
	Name                        string
	Subject, HTMLBody, TextBody string
	SMSBody                     string
}

// CampaignContent is what a campaign sends and to whom: one per (tenant, campaign).
type CampaignContent struct {
	TenantID, CampaignID string
	Channel              Channel
	// SegmentID is the audience; "" is every contact of the tenant.
	SegmentID        string
	SenderIdentityID string
	// QuietHours and SendAtLocalTime (an offset from local midnight; nil: as soon as
	// possible) place each recipient's send in its own zone (SendTime).
	QuietHours      QuietHours
	SendAtLocalTime *time.Duration
	// MessageCost is the value of each delivered message's impression event, ClickCost of
	// each click event: what analytics counts as the campaign's spend.
	MessageCost, ClickCost Money
	// NoSMSStopFooter leaves SMSStopFooter off the SMS bodies.
	NoSMSStopFooter bool
	Variants        []VariantContent
	// Revision increases with every change: the API's etag.
	Revision               int64
	CreateTime, UpdateTime time.Time
}

// ContentEtag is the opaque version of a campaign's content.
func ContentEtag(c CampaignContent) string { return "r" + strconv.FormatInt(c.Revision, 10) }

// ParseContentEtag returns the revision an etag names; "" is 0 (any revision).
func ParseContentEtag(etag string) (int64, error) {
	rev, err := ParseContactEtag(etag)
	if err != nil {
		var v apperr.Violations
		v.Add("content.etag", "is not an etag this service returned")
		return 0, v.Err()
	}
	return rev, nil
}

// Variant returns the content of the variant named name.
func (c CampaignContent) Variant(name string) (VariantContent, bool) {
	for _, v := range c.Variants {
		if v.Name == name {
			return v, true
		}
	}
	return VariantContent{}, false
}

// sameAs reports whether c and o say the same (ignoring ids, revision and times): saving
// the same content again changes nothing.
func (c CampaignContent) sameAs(o CampaignContent) bool {
	eqTime := (c.SendAtLocalTime == nil) == (o.SendAtLocalTime == nil) &&
		(c.SendAtLocalTime == nil || *c.SendAtLocalTime == *o.SendAtLocalTime)
	return c.Channel == o.Channel && c.SegmentID == o.SegmentID && c.SenderIdentityID == o.SenderIdentityID &&
		c.QuietHours == o.QuietHours && eqTime && c.MessageCost == o.MessageCost && c.ClickCost == o.ClickCost &&
		c.NoSMSStopFooter == o.NoSMSStopFooter && slices.Equal(c.Variants, o.Variants)
}

func validateMoney(v *apperr.Violations, field string, m Money) {
	if m.Micros < 0 || m.Micros > MaxCostMicros {
		v.Add(field+".micros", "must be 0 to %d", int64(MaxCostMicros))
	}
	if m.Micros > 0 && !currency.MatchString(m.Currency) {
		v.Add(field+".currency", "must be an ISO 4217 code such as EUR")
	}
	if m.Micros == 0 && m.Currency != "" && !currency.MatchString(m.Currency) {
		v.Add(field+".currency", "must be empty or an ISO 4217 code such as EUR")
	}
}

// validate checks every field and parses every template; it returns the parsed variants.
func (c *CampaignContent) validate() (map[string]compiledVariant, error) {
	var v apperr.Violations
	if !c.Channel.Valid() {
		v.Add("content.channel", "must be email or sms")
	}
	if c.SegmentID != "" && !uuidPattern.MatchString(c.SegmentID) {
		v.Add("content.segment_id", "must be a segment's id (a UUID) or empty for every contact")
	}
	if !uuidPattern.MatchString(c.SenderIdentityID) {
		v.Add("content.sender_identity_id", "must be a sender identity's id (a UUID)")
	}
	if err := c.QuietHours.Validate(); err != nil {
		v.Add("content.quiet_hours", "%s", err.Error())
	}
	if t := c.SendAtLocalTime; t != nil && (*t < 0 || *t >= 24*time.Hour) {
		v.Add("content.send_at_local_time", "must be a time of day (00:00 to 23:59)")
	}
	validateMoney(&v, "content.message_cost", c.MessageCost)
	validateMoney(&v, "content.click_cost", c.ClickCost)
	if c.NoSMSStopFooter && c.Channel != ChannelSMS {
		v.Add("content.no_sms_stop_footer", "applies to SMS content only")
	}
	switch {
	case len(c.Variants) == 0:
		v.Add("content.variants", "at least one variant is required")
	case len(c.Variants) > MaxContentVariants:
		v.Add("content.variants", "at most %d variants", MaxContentVariants)
	}
	compiled := map[string]compiledVariant{}
	for i, vc := range c.Variants {
		field := fmt.Sprintf("content.variants[%d]", i)
		if i >= MaxContentVariants {
			break
		}
		if !variantName.MatchString(vc.Name) {
			v.Add(field+".name", "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
		} else if _, dup := compiled[vc.Name]; dup {
			v.Add(field+".name", "duplicate variant name %q", vc.Name)
		}
		sizes := []struct {
			name, value string
			max         int
			unit        string
			n           int
		}{
			{"subject", vc.Subject, MaxSubjectLen, "bytes", len(vc.Subject)},
			{"html_body", vc.HTMLBody, MaxHTMLBodyLen, "bytes", len(vc.HTMLBody)},
			{"text_body", vc.TextBody, MaxTextBodyLen, "bytes", len(vc.TextBody)},
			{"sms_body", vc.SMSBody, MaxSMSBodyLen, "characters", runeCount(vc.SMSBody)},
		}
		tooLong := false
		for _, s := range sizes {
			if s.n > s.max {
				v.Add(field+"."+s.name, "at most %d %s", s.max, s.unit)
				tooLong = true
			}
		}
		switch c.Channel {
		case ChannelEmail:
			if strings.TrimSpace(vc.Subject) == "" {
				v.Add(field+".subject", "is required for email")
			} else if !printableText(vc.Subject) {
				v.Add(field+".subject", "must be one line of text")
			}
			if vc.HTMLBody == "" && vc.TextBody == "" {
				v.Add(field, "an email needs an html_body or a text_body")
			}
			if vc.SMSBody != "" {
				v.Add(field+".sms_body", "is for SMS content only")
			}
		case ChannelSMS:
			if strings.TrimSpace(vc.SMSBody) == "" {
				v.Add(field+".sms_body", "is required for SMS")
			}
			if vc.Subject != "" || vc.HTMLBody != "" || vc.TextBody != "" {
				v.Add(field, "subject, html_body and text_body are for email content only")
			}
		}
		for _, s := range sizes {
			if s.value != "" && (!utf8.ValidString(s.value) || strings.IndexByte(s.value, 0) >= 0) {
				v.Add(field+"."+s.name, "must be UTF-8 text without NUL bytes")
				tooLong = true
			}
		}
		if tooLong || !c.Channel.Valid() {
			continue
		}
		cv, errs := compileVariant(vc, c.Channel)
		for _, name := range []string{"subject", "html_body", "text_body", "sms_body"} {
			if err := errs[name]; err != nil {
				v.Add(field+"."+name, "%s", err.Error())
			}
		}
		compiled[vc.Name] = cv
	}
	return compiled, v.Err()
}

// ContentStore is the port of content and sender identities. Another tenant's content or
// identity is NOT_FOUND.
type ContentStore interface {
	GetCampaignContent(ctx context.Context, tenantID, campaignID string) (CampaignContent, error)
	// ContentRevision returns the revision of a campaign's content (NOT_FOUND when none).
	ContentRevision(ctx context.Context, tenantID, campaignID string) (int64, error)
	// PutCampaignContent stores c as the campaign's content with the next revision (1 for
	// the first), if the stored revision is revision (0: any, or none yet; else ABORTED),
	// with the audit record rec returns. When same says the stored content equals c, it
	// returns the stored content untouched (no new revision, no record).
	PutCampaignContent(ctx context.Context, c CampaignContent, revision int64, same func(CampaignContent) bool, rec func() *audit.Record) (CampaignContent, error)

	// CreateSenderIdentity stores s, unless the tenant has max identities already
	// (RESOURCE_EXHAUSTED).
	CreateSenderIdentity(ctx context.Context, s SenderIdentity, max int, rec *audit.Record) (SenderIdentity, error)
	GetSenderIdentity(ctx context.Context, tenantID, id string) (SenderIdentity, error)
	ListSenderIdentities(ctx context.Context, tenantID string) ([]SenderIdentity, error)
	VerifySenderIdentity(ctx context.Context, tenantID, id string, rec *audit.Record) (SenderIdentity, error)
	// DeleteSenderIdentity deletes an identity no content uses (else FAILED_PRECONDITION).
	DeleteSenderIdentity(ctx context.Context, tenantID, id string, rec *audit.Record) error
}

// ContactReader reads one contact (the audiences store).
type ContactReader interface {
	GetContact(ctx context.Context, tenantID, id string) (Contact, error)
}

// SegmentReader reads one segment (the audiences store).
type SegmentReader interface {
	GetSegment(ctx context.Context, tenantID, id string) (Segment, error)
}

// MessagesConfig configures Messages.
type MessagesConfig struct {
	Store    ContentStore
	Contacts ContactReader
	// Segments checks that content names a segment of the tenant (not checked when nil).
	Segments SegmentReader
	// Links makes tracked links (the tracking adapter). Required to render.
	Links Links
	// Providers send test messages, one per channel (a channel without one answers
	// FAILED_PRECONDITION to a test send).
	Providers map[Channel]Provider
	// TestSendsPerMinute bounds each tenant's test sends (DefaultTestSendRate when 0).
	TestSendsPerMinute int
	// Eligible decides, right before a send, whether the contact may still be sent to
	// (Audiences.EligibleNow: consent, suppression, the platform's suppression list); the
	// contact's own fields alone (Eligible) when nil.
	Eligible func(ctx context.Context, tenantID string, c Contact, ch Channel) (bool, SkipReason, error)
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Quotas, when set, refuse a test send while the tenant is over a hard quota of the
	// content's channel (test sends are not counted: billing counts the ledger's sent rows).
	Quotas *quota.View
}

// Messages implements the content, sender identity and test send use cases, and composes
// each recipient's message for the Sender.
type Messages struct {
	store     ContentStore
	contacts  ContactReader
	segments  SegmentReader
	links     Links
	providers map[Channel]Provider
	perMinute int
	eligible  func(ctx context.Context, tenantID string, c Contact, ch Channel) (bool, SkipReason, error)
	now       func() time.Time
	quotas    *quota.View

	// cache holds each campaign's parsed content: Compose renders thousands of messages a
	// second and must neither read nor parse the content for each.
	cache sync.Map // contentKey → *cachedContent
	// identities are the sender identities content uses, by id.
	identities sync.Map // id → SenderIdentity

	mu      sync.Mutex
	testers map[string]*rate.Limiter
}

type contentKey struct{ tenantID, campaignID string }

type cachedContent struct {
	content  CampaignContent
	variants map[string]compiledVariant
	identity SenderIdentity
	// checked is when the revision was last confirmed current.
	mu      sync.Mutex
	checked time.Time
}

// NewMessages returns the messages use cases.
func NewMessages(cfg MessagesConfig) *Messages {
	m := &Messages{store: cfg.Store, contacts: cfg.Contacts, segments: cfg.Segments, links: cfg.Links, providers: cfg.Providers,
		perMinute: cfg.TestSendsPerMinute, eligible: cfg.Eligible, now: cfg.Now, testers: map[string]*rate.Limiter{}, quotas: cfg.Quotas}
	if m.eligible == nil {
		m.eligible = func(_ context.Context, _ string, c Contact, ch Channel) (bool, SkipReason, error) {
			ok, why := Eligible(c, ch)
			return ok, why, nil
		}
	}
	if m.perMinute <= 0 {
		m.perMinute = DefaultTestSendRate
	}
	if m.now == nil {
		m.now = time.Now
	}
	return m
}

func checkCampaign(tenantID, campaignID string) error {
	return apperr.First(audienceTenant(tenantID), checkContactID("campaign_id", campaignID))
}

// SetCampaignContent saves the campaign's content: validated (limits, templates, variant
// names unique), with a segment of the tenant if it names one, with a verified identity of the content's channel (else
// FAILED_PRECONDITION: an unverified identity must not send). With revision (the etag's),
// only if the stored content is at that revision (else ABORTED). Saving what is stored again
// changes nothing (same revision; the call itself is still audited). Audited.
func (m *Messages) SetCampaignContent(ctx context.Context, tenantID string, c CampaignContent, revision int64) (CampaignContent, error) {
	if err := checkCampaign(tenantID, c.CampaignID); err != nil {
		return CampaignContent{}, err
	}
	c.TenantID = tenantID
	if c.Variants == nil {
		c.Variants = []VariantContent{}
	}
	if _, err := c.validate(); err != nil {
		return CampaignContent{}, err
	}
	if c.SegmentID != "" && m.segments != nil {
		_, err := m.segments.GetSegment(ctx, tenantID, c.SegmentID)
		if apperr.HasCode(err, apperr.NotFound) {
			var v apperr.Violations
			v.Add("content.segment_id", "names no segment of this tenant")
			return CampaignContent{}, v.Err()
		}
		if err != nil {
			return CampaignContent{}, err
		}
	}
	id, err := m.store.GetSenderIdentity(ctx, tenantID, c.SenderIdentityID)
	switch {
	case apperr.HasCode(err, apperr.NotFound):
		var v apperr.Violations
		v.Add("content.sender_identity_id", "names no sender identity of this tenant")
		return CampaignContent{}, v.Err()
	case err != nil:
		return CampaignContent{}, err
	case id.Channel != c.Channel:
		var v apperr.Violations
		v.Add("content.sender_identity_id", "is an identity of channel %s, the content is %s", id.Channel, c.Channel)
		return CampaignContent{}, v.Err()
	case !id.Verified:
		return CampaignContent{}, apperr.New(apperr.FailedPrecondition, "SENDER_IDENTITY_UNVERIFIED",
			"sender identity %s is not verified: an administrator verifies it first", id.ID)
	}
	out, err := m.store.PutCampaignContent(ctx, c, revision, c.sameAs, func() *audit.Record {
		return takeAudienceRecord(ctx, tenantID, "campaigns/"+c.CampaignID+"/content")
	})
	if err == nil {
		m.cache.Delete(contentKey{tenantID, c.CampaignID})
	}
	return out, err
}

// GetCampaignContent returns the campaign's content (NOT_FOUND when it has none).
func (m *Messages) GetCampaignContent(ctx context.Context, tenantID, campaignID string) (CampaignContent, error) {
	if err := checkCampaign(tenantID, campaignID); err != nil {
		return CampaignContent{}, err
	}
	return m.store.GetCampaignContent(ctx, tenantID, campaignID)
}

// Plan returns the campaign's content for the dispatcher: false when the campaign has none
// (it cannot be sent yet).
func (m *Messages) Plan(ctx context.Context, tenantID, campaignID string) (CampaignContent, bool, error) {
	cc, err := m.loaded(ctx, tenantID, campaignID)
	switch {
	case apperr.HasCode(err, apperr.NotFound):
		return CampaignContent{}, false, nil
	case err != nil:
		return CampaignContent{}, false, err
	}
	c := cc.content
	c.Variants = slices.Clone(c.Variants) // the cache's copy stays as loaded
	return c, true, nil
}

// SendPlan implements SendPlans for the Dispatcher: whom and when the campaign's content
// sends to; ok is false while the campaign has no content.
func (m *Messages) SendPlan(ctx context.Context, tenantID, campaignID string) (SendPlan, bool, error) {
	c, ok, err := m.Plan(ctx, tenantID, campaignID)
	if err != nil || !ok {
		return SendPlan{}, ok, err
	}
	return SendPlan{Channel: c.Channel, SegmentID: c.SegmentID, QuietHours: c.QuietHours, LocalSendTime: c.SendAtLocalTime}, true, nil
}

// Costs returns what a delivered message and a click of the campaign are worth as spend
// (zero when the campaign has no content).
func (m *Messages) Costs(ctx context.Context, tenantID, campaignID string) (messageCost, clickCost Money, err error) {
	c, ok, err := m.Plan(ctx, tenantID, campaignID)
	if err != nil || !ok {
		return Money{}, Money{}, err
	}
	return c.MessageCost, c.ClickCost, nil
}

// loaded returns the campaign's parsed content and identity from the cache, confirming at
// most once a contentRecheck that its revision is still the stored one.
func (m *Messages) loaded(ctx context.Context, tenantID, campaignID string) (*cachedContent, error) {
	if err := checkCampaign(tenantID, campaignID); err != nil {
		return nil, err
	}
	key := contentKey{tenantID, campaignID}
	now := m.now()
	if v, ok := m.cache.Load(key); ok {
		cc := v.(*cachedContent)
		cc.mu.Lock()
		fresh := now.Sub(cc.checked) < contentRecheck
		cc.mu.Unlock()
		if fresh {
			return cc, nil
		}
		rev, err := m.store.ContentRevision(ctx, tenantID, campaignID)
		if err == nil && rev == cc.content.Revision {
			cc.mu.Lock()
			cc.checked = now
			cc.mu.Unlock()
			return cc, nil
		}
		if err != nil && !apperr.HasCode(err, apperr.NotFound) {
			return nil, err
		}
		m.cache.Delete(key)
	}
	c, err := m.store.GetCampaignContent(ctx, tenantID, campaignID)
	if err != nil {
		return nil, err
	}
	variants, err := c.validate()
	if err != nil {
		return nil, fmt.Errorf("stored content of campaign %s: %w", campaignID, err)
	}
	id, err := m.identity(ctx, tenantID, c.SenderIdentityID)
	if err != nil {
		return nil, err
	}
	cc := &cachedContent{content: c, variants: variants, identity: id, checked: now}
	m.cache.Store(key, cc)
	return cc, nil
}

func (m *Messages) identity(ctx context.Context, tenantID, id string) (SenderIdentity, error) {
	if v, ok := m.identities.Load(id); ok && v.(SenderIdentity).TenantID == tenantID {
		return v.(SenderIdentity), nil
	}
	s, err := m.store.GetSenderIdentity(ctx, tenantID, id)
	if err != nil {
		return SenderIdentity{}, fmt.Errorf("sender identity %s: %w", id, err)
	}
	m.identities.Store(id, s)
	return s, nil
}

// forgetIdentity drops a changed identity and the contents cached with it.
func (m *Messages) forgetIdentity(id string) {
	m.identities.Delete(id)
	m.cache.Range(func(k, v any) bool {
		if v.(*cachedContent).identity.ID == id {
			m.cache.Delete(k)
		}
		return true
	})
}

// ErrContactGone is Compose's error for a recipient whose contact no longer exists (erased
// or deleted since it was resolved): nothing is sent to it.
var ErrContactGone = errors.New("the recipient's contact no longer exists")

// SkipContactGone is the skip reason of a recipient whose contact was deleted or erased.
const SkipContactGone SkipReason = "contact_gone"

// SkipError is a Compose error meaning the recipient must not be sent to at all (its contact
// is gone, unsubscribed or suppressed since the campaign's recipients were resolved): the
// Sender records the row as skipped instead of retrying it.
type SkipError struct {
	Reason SkipReason
	Err    error
}

func (e *SkipError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("not sent (%s): %v", e.Reason, e.Err)
	}
	return fmt.Sprintf("not sent (%s)", e.Reason)
}

// Unwrap returns the cause.
func (e *SkipError) Unwrap() error { return e.Err }

// Compose renders the message of a ledger row: the campaign's content for the row's variant,
// for its contact, with tracked links under the row's id. It is the Sender's
// SenderConfig.Compose; the Sender sets the addressing fields itself.
func (m *Messages) Compose(ctx context.Context, r Recipient) (Message, error) {
	if m.links == nil {
		return Message{}, errors.New("compose: no tracking links configured")
	}
	cc, err := m.loaded(ctx, r.TenantID, r.CampaignID)
	if err != nil {
		return Message{}, fmt.Errorf("compose: content of campaign %s: %w", r.CampaignID, err)
	}
	cv, ok := cc.variants[r.Variant]
	if !ok {
		return Message{}, fmt.Errorf("compose: campaign %s has no content for variant %q", r.CampaignID, r.Variant)
	}
	c, err := m.contacts.GetContact(ctx, r.TenantID, r.ContactID)
	if apperr.HasCode(err, apperr.NotFound) {
		return Message{}, fmt.Errorf("compose: contact %s: %w", r.ContactID, &SkipError{Reason: SkipContactGone, Err: ErrContactGone})
	}
	if err != nil {
		return Message{}, fmt.Errorf("compose: contact %s: %w", r.ContactID, err)
	}
	// Consent and suppression again, right before the send: an unsubscribe, a bounce or a
	// suppression since the recipients were resolved stops this message.
	ok, why, err := m.eligible(ctx, r.TenantID, c, cc.content.Channel)
	if err != nil {
		return Message{}, fmt.Errorf("compose: eligibility of contact %s: %w", r.ContactID, err)
	}
	if !ok {
		return Message{}, fmt.Errorf("compose: contact %s: %w", r.ContactID, &SkipError{Reason: why})
	}
	out := cv.render(&Render{Contact: &c, Ref: r.ID, Links: m.links}, cc.content.Channel, !cc.content.NoSMSStopFooter)
	return messageOf(out, cc.content.Channel, cc.identity), nil
}

// messageOf turns rendered content into a provider's message from identity.
func messageOf(out Rendered, ch Channel, id SenderIdentity) Message {
	msg := Message{From: fromOf(id)}
	if ch == ChannelSMS {
		msg.Text = out.SMS
		return msg
	}
	msg.Subject, msg.HTML, msg.Text, msg.ListUnsubscribeURL = out.Subject, out.HTML, out.Text, out.ListUnsubscribeURL
	return msg
}

func fromOf(id SenderIdentity) MessageFrom {
	return MessageFrom{Email: id.FromEmail, Name: id.FromName, ReplyTo: id.ReplyTo,
		Number: id.FromNumber, MessagingServiceSID: id.MessagingServiceSID}
}

// PreviewInput says what to render a preview for: a contact of the tenant, or sample values
// (a contact's fields and attributes, stored nowhere).
type PreviewInput struct {
	CampaignID, Variant string
	ContactID           string
	Sample              Contact
}

// Preview is a rendered message with, for SMS, its length in characters.
type Preview struct {
	Channel Channel
	Rendered
	SMSLength int
}

// PreviewRef is the reference preview links are made with: no ledger row has it.
const PreviewRef = "preview"

// PreviewMessage renders the campaign's variant for a contact or sample values, as Compose
// would (links tracked under PreviewRef).
func (m *Messages) PreviewMessage(ctx context.Context, tenantID string, in PreviewInput) (Preview, error) {
	cc, cv, c, err := m.prepare(ctx, tenantID, in)
	if err != nil {
		return Preview{}, err
	}
	out := cv.render(&Render{Contact: &c, Ref: PreviewRef, Links: m.links}, cc.content.Channel, !cc.content.NoSMSStopFooter)
	return Preview{Channel: cc.content.Channel, Rendered: out, SMSLength: runeCount(out.SMS)}, nil
}

func (m *Messages) prepare(ctx context.Context, tenantID string, in PreviewInput) (*cachedContent, compiledVariant, Contact, error) {
	var v apperr.Violations
	if in.ContactID != "" && !uuidPattern.MatchString(in.ContactID) {
		v.Add("contact_id", "must be a UUID")
	}
	if in.ContactID != "" && (in.Sample.Email != "" || in.Sample.Phone != "" || len(in.Sample.Attributes) > 0 || in.Sample.Locale != "" || in.Sample.TimeZone != "") {
		v.Add("sample", "give a contact_id or sample values, not both")
	}
	validateAttributes(&v, "sample.attributes", in.Sample.Attributes)
	if err := apperr.First(checkCampaign(tenantID, in.CampaignID), v.Err()); err != nil {
		return nil, compiledVariant{}, Contact{}, err
	}
	if m.links == nil {
		return nil, compiledVariant{}, Contact{}, apperr.New(apperr.FailedPrecondition, "TRACKING_NOT_CONFIGURED", "tracking links are not configured on this deployment")
	}
	cc, err := m.loaded(ctx, tenantID, in.CampaignID)
	if err != nil {
		return nil, compiledVariant{}, Contact{}, err
	}
	cv, ok := cc.variants[in.Variant]
	if !ok {
		var v apperr.Violations
		v.Add("variant", "the campaign's content has no variant %q", truncate(in.Variant, 64))
		return nil, compiledVariant{}, Contact{}, v.Err()
	}
	c := in.Sample
	if in.ContactID != "" {
		if c, err = m.contacts.GetContact(ctx, tenantID, in.ContactID); err != nil {
			return nil, compiledVariant{}, Contact{}, err
		}
	}
	return cc, cv, c, nil
}

// TestSend is a test message's destination and content.
type TestSend struct {
	PreviewInput
	// To is an email address (email content) or an E.164 number (SMS content).
	To string
}

// TestSent is a test send's result.
type TestSent struct {
	Ref, ProviderID string
}

// SendTestMessage renders the campaign's variant as PreviewMessage does and sends it to a
// given address through the channel's provider, with the reference "test-<uuid>". It is
// never recorded in the ledger and has no tracked outcome; each tenant may send
// TestSendsPerMinute a minute (else RESOURCE_EXHAUSTED), and none while the tenant is over a
// hard quota of the channel (RESOURCE_EXHAUSTED QUOTA_EXCEEDED, MessagesConfig.Quotas).
// Audited (by its call).
func (m *Messages) SendTestMessage(ctx context.Context, tenantID string, in TestSend) (TestSent, error) {
	cc, cv, c, err := m.prepare(ctx, tenantID, in.PreviewInput)
	if err != nil {
		return TestSent{}, err
	}
	var v apperr.Violations
	to := in.To
	if cc.content.Channel == ChannelSMS {
		to = NormalizePhone(to)
		validatePhone(&v, "to", to)
	} else {
		to = NormalizeEmail(to)
		validateEmail(&v, "to", to)
	}
	if to == "" {
		v.Add("to", "is required")
	}
	if err := v.Err(); err != nil {
		return TestSent{}, err
	}
	p := m.providers[cc.content.Channel]
	if p == nil {
		return TestSent{}, apperr.New(apperr.FailedPrecondition, "NO_PROVIDER", "no %s provider is configured on this deployment", cc.content.Channel)
	}
	if hard := (Quotas{View: m.quotas}).held(tenantID, cc.content.Channel.QuotaMeter(), m.now()); hard != nil {
		return TestSent{}, hard.Err()
	}
	if !m.tester(tenantID).Allow() {
		return TestSent{}, apperr.New(apperr.ResourceExhausted, "TEST_SEND_RATE", "at most %d test sends a minute", m.perMinute)
	}
	ref := "test-" + newUUID()
	audit.Annotate(ctx, "", "", "campaigns/"+in.CampaignID+"/content:sendTest")
	out := cv.render(&Render{Contact: &c, Ref: ref, Links: m.links}, cc.content.Channel, !cc.content.NoSMSStopFooter)
	msg := messageOf(out, cc.content.Channel, cc.identity)
	msg.Ref, msg.TenantID, msg.CampaignID, msg.Variant, msg.To = ref, tenantID, in.CampaignID, in.Variant, to
	id, err := p.Send(ctx, msg)
	if err != nil {
		class, _ := Classify(err)
		if class == NotProcessedPermanent {
			return TestSent{}, apperr.New(apperr.FailedPrecondition, "PROVIDER_REFUSED", "the provider refused the test message")
		}
		return TestSent{}, apperr.New(apperr.Unavailable, "PROVIDER_UNAVAILABLE", "the provider did not take the test message; try again")
	}
	return TestSent{Ref: ref, ProviderID: id}, nil
}

func (m *Messages) tester(tenantID string) *rate.Limiter {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.testers[tenantID]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(float64(m.perMinute)/60), m.perMinute)
		m.testers[tenantID] = l
	}
	return l
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
