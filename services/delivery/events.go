package delivery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// Pricing is the port to what a campaign's messages and clicks cost (the campaign's content
// settings): a delivered message is reported as an impression worth message, a click as a
// click worth click, so budgets see delivery like any other spend.
type Pricing interface {
	Costs(ctx context.Context, tenantID, campaignID string) (message, click Money, err error)
}

// EventType is the kind of an event delivery reports to the pipeline: ingest's types.
type EventType string

// The event types delivery reports. Only impressions and clicks carry a value: analytics counts
// their value as spend, so an open (which must not be priced) is a track event.
const (
	EventTrack      EventType = "track"
	EventImpression EventType = "impression"
	EventClick      EventType = "click"
)

// The names of the track events delivery reports.
const (
	EventNameOpened       = "email_opened"
	EventNameBounced      = "message_bounced"
	EventNameDropped      = "message_dropped"
	EventNameSpamReport   = "message_spam_report"
	EventNameUnsubscribed = "message_unsubscribed"
	EventNameUndelivered  = "message_undelivered"
	EventNameFailed       = "message_failed"
	EventNameDelivered    = "message_delivered"
	EventNameClicked      = "message_clicked"
)

// Event is one event delivery reports to the tenant's pipeline (through ingest, as the delivery
// service). UserID is the contact's id: the data subject, without personal data.
type Event struct {
	// ID is deterministic for what it reports: a retried publish of the same click or webhook
	// event reuses it, and ingest's dedup keeps one.
	ID            string
	Type          EventType
	Name          string
	UserID        string
	CampaignID    string
	Variant       string
	Value         Money
	Time          time.Time
	Properties    map[string]string
	IP, UserAgent string
}

// EventSink is the port to the event pipeline (ingest's IngestTenantEvents). Publish returns
// only once every event is stored (or was stored before: the same ids are deduplicated).
type EventSink interface {
	Publish(ctx context.Context, tenantID string, evs []Event) error
}

// TrackingStore is the port to what tracking reads and writes: the ledger row a ref names,
// and provider events already handled.
type TrackingStore interface {
	// TrackedRecipient returns the ledger row whose id is ref, in whatever tenant (the ref
	// came from a verified token or a verified webhook): NotFound if there is none.
	TrackedRecipient(ctx context.Context, ref string) (Recipient, error)
	// BeginProviderEvent records e's dedup key. The first time, it also sets the ledger row's
	// delivery status to e's (when e names a ledger row and status is not empty) in the same
	// transaction, so a status changes once per provider event. done reports that the key was
	// recorded before and finished: there is nothing left to do.
	BeginProviderEvent(ctx context.Context, e ProviderEvent, tenantID, status string) (done bool, err error)
	// FinishProviderEvent marks e's key finished (its events published).
	FinishProviderEvent(ctx context.Context, e ProviderEvent) error
}

// Tracker turns clicks, opens, provider webhooks, unsubscribes and SMS keywords into events
// and consent changes. Tokens and webhook signatures are checked before it is called (tokens
// here, webhook signatures by the grpcapi adapters that hold the provider's wire formats).
type Tracker struct {
	key       TrackingKey
	store     TrackingStore
	audiences *Audiences
	pricing   Pricing
	events    EventSink
	log       *slog.Logger
	now       func() time.Time
}

// NewTracker returns the tracking use cases.
func NewTracker(key TrackingKey, store TrackingStore, audiences *Audiences, pricing Pricing, events EventSink, log *slog.Logger) *Tracker {
	if log == nil {
		log = slog.Default()
	}
	return &Tracker{key: key, store: store, audiences: audiences, pricing: pricing, events: events, log: log, now: time.Now}
}

// WithClock replaces the clock (tests).
func (t *Tracker) WithClock(now func() time.Time) *Tracker { t.now = now; return t }

// errNoSuchLink answers every token that does not lead anywhere (forged, altered, of a row
// that no longer exists) alike: the caller learns nothing about why.
var errNoSuchLink = apperr.New(apperr.NotFound, "LINK_NOT_FOUND", "no such link")

// recipientOf verifies token as kind and returns the ledger row it names and the target.
func (t *Tracker) recipientOf(ctx context.Context, kind TokenKind, token string) (Recipient, string, error) {
	ref, target, err := t.key.Verify(kind, token)
	if err != nil {
		return Recipient{}, "", errNoSuchLink
	}
	r, err := t.store.TrackedRecipient(ctx, ref)
	if apperr.HasCode(err, apperr.NotFound) {
		return Recipient{}, "", errNoSuchLink
	}
	if err != nil {
		return Recipient{}, "", fmt.Errorf("look up tracked recipient: %w", err)
	}
	return r, target, nil
}

// ClickOutcome is where a click redirects and whether its event was stored.
type ClickOutcome struct {
	Target string
	// Recorded is false when the event could not be published (pipeline down): the click
	// still redirects, since a broken link in a sent message cannot be fixed later.
	Recorded bool
}

// MaxUserAgentLen bounds the user agent kept with a click or open.
const MaxUserAgentLen = 512

// Click verifies a click token and reports a click event for the row's campaign, variant and
// contact, worth the campaign's click cost, and returns the link to redirect to. A token that
// does not verify is NotFound.
func (t *Tracker) Click(ctx context.Context, token, userAgent, ip string) (ClickOutcome, error) {
	r, target, err := t.recipientOf(ctx, TokenClick, token)
	if err != nil {
		return ClickOutcome{}, err
	}
	ev := Event{ID: "click:" + r.ID + ":" + nonce(), Type: EventClick, Name: EventNameClicked,
		UserID: r.ContactID, CampaignID: r.CampaignID, Variant: r.Variant, Time: t.now().UTC(),
		Properties: map[string]string{"url": linkWithoutQuery(target)}, IP: ip, UserAgent: truncate(userAgent, MaxUserAgentLen)}
	_, click, err := t.pricing.Costs(ctx, r.TenantID, r.CampaignID)
	if err == nil {
		ev.Value = click
		err = t.events.Publish(ctx, r.TenantID, []Event{ev})
	}
	if err != nil {
		t.log.WarnContext(ctx, "click not recorded", "tenant_id", r.TenantID, "campaign_id", r.CampaignID, "ref", r.ID, "error", err)
		return ClickOutcome{Target: target}, nil
	}
	return ClickOutcome{Target: target, Recorded: true}, nil
}

// Open verifies an open token and reports an email_opened track event (unpriced). The pixel
// is answered whatever happens, so Open's error is for logs only.
func (t *Tracker) Open(ctx context.Context, token, userAgent, ip string) error {
	r, _, err := t.recipientOf(ctx, TokenOpen, token)
	if err != nil {
		return err
	}
	ev := Event{ID: "open:" + r.ID + ":" + nonce(), Type: EventTrack, Name: EventNameOpened,
		UserID: r.ContactID, CampaignID: r.CampaignID, Variant: r.Variant, Time: t.now().UTC(),
		IP: ip, UserAgent: truncate(userAgent, MaxUserAgentLen)}
	if err := t.events.Publish(ctx, r.TenantID, []Event{ev}); err != nil {
		return fmt.Errorf("publish open of %s: %w", r.ID, err)
	}
	return nil
}

// linkWithoutQuery is the clicked link as the event records it: scheme, host and path. A
// template may put a recipient's data into a link's query or fragment (?email=…): that stays out
// of the pipeline.
func linkWithoutQuery(target string) string {
	u, err := url.Parse(target)
	if err != nil {
		return ""
	}
	u.RawQuery, u.Fragment, u.RawFragment, u.User = "", "", "", nil
	return u.String()
}

// nonce distinguishes two clicks of one link: each is an event, but one click's event keeps its
// id across the sink's retries.
func nonce() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// errEventsUnavailable is what a caller sees when the pipeline did not take an event: retry.
var errEventsUnavailable = apperr.New(apperr.Unavailable, "EVENTS_UNAVAILABLE", "events could not be recorded; retry later")

// publish reports evs, mapping a pipeline failure to a retryable error (the detail is logged).
func (t *Tracker) publish(ctx context.Context, tenantID string, evs []Event) error {
	if len(evs) == 0 {
		return nil
	}
	if err := t.events.Publish(ctx, tenantID, evs); err != nil {
		t.log.WarnContext(ctx, "events not published", "tenant_id", tenantID, "events", len(evs), "error", err)
		var de *apperr.Error
		if errors.As(err, &de) && de.Code == apperr.Invalid {
			return err
		}
		return errEventsUnavailable
	}
	return nil
}
