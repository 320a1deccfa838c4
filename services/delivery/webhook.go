package delivery

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
)

// WebhookProvider names the provider a webhook came from.
type WebhookProvider string

// The providers whose webhooks delivery receives.
const (
	WebhookSendGrid WebhookProvider = "sendgrid"
	WebhookTwilio   WebhookProvider = "twilio"
)

// ProviderEvent is one verified status event of a provider (a SendGrid Event Webhook event, a
// Twilio status callback), in the provider's own terms. Its dedup key is (Provider, MessageID,
// Type, Time): what stays the same when the provider redelivers (SendGrid's sg_event_id may
// change; Twilio callbacks carry no time, and a message reaches each status once).
type ProviderEvent struct {
	Provider  WebhookProvider
	MessageID string
	// Type is the provider's event type or message status ("delivered", "bounce", "failed"…).
	Type string
	Time time.Time
	// Ref is the ledger row's id the message carried (SendGrid's cm_ref custom arg, the
	// StatusCallback URL's cm_ref): events without one are not ours and are ignored.
	Ref string
	// BounceType is SendGrid's bounce type: "bounce" (hard) or "blocked" (soft).
	BounceType string
	// ErrorCode is Twilio's error code of a failed or undelivered message.
	ErrorCode int
}

// ID is the event's deterministic id in the pipeline, from its dedup key.
func (e ProviderEvent) ID() string {
	h := sha256.Sum256([]byte(string(e.Provider) + "\x00" + e.MessageID + "\x00" + e.Type + "\x00" + strconv.FormatInt(e.Time.Unix(), 10)))
	return string(e.Provider) + ":" + hex.EncodeToString(h[:16])
}

// ProviderEventRetention is how long a provider event's dedup key is kept: well beyond the
// longest redelivery (SendGrid retries a failed post for up to 72 hours; Twilio for less), so a
// redelivery always finds its key.
const ProviderEventRetention = 7 * 24 * time.Hour

// Twilio error codes that mean the number will never take a message (the address is
// suppressed) and that the recipient replied STOP (consent revoked).
const (
	twilioUnknownDestination = 30005
	twilioLandline           = 30006
	twilioUnsubscribed       = 21610
)

// effect is what a provider event means for delivery.
type effect struct {
	event Event
	// status is the ledger row's new delivery status ("" leaves it).
	status string
	// suppress, when set, suppresses the contact with this reason.
	suppress string
	// revoke, when set, revokes the contact's consent on the channel.
	revoke Channel
}

// effectOf maps a provider event; ok is false for events delivery does not act on (processed,
// deferred, opens and clicks of the provider's own tracking, queued/sent statuses).
func effectOf(e ProviderEvent) (effect, bool) {
	f := effect{status: e.Type, event: Event{Type: EventTrack}}
	switch e.Provider {
	case WebhookSendGrid:
		switch e.Type {
		case "delivered":
			f.event = Event{Type: EventImpression, Name: EventNameDelivered}
		case "bounce":
			f.event.Name = EventNameBounced
			if e.BounceType != "blocked" {
				f.suppress = "hard_bounce"
			}
		case "dropped":
			f.event.Name = EventNameDropped
		case "spamreport":
			f.event.Name, f.suppress = EventNameSpamReport, "spam_report"
		case "unsubscribe", "group_unsubscribe":
			f.event.Name, f.revoke = EventNameUnsubscribed, ChannelEmail
		default:
			return effect{}, false
		}
	case WebhookTwilio:
		switch e.Type {
		case "delivered":
			f.event = Event{Type: EventImpression, Name: EventNameDelivered}
		case "undelivered", "failed":
			f.event.Name = EventNameUndelivered
			if e.Type == "failed" {
				f.event.Name = EventNameFailed
			}
			switch e.ErrorCode {
			case twilioUnknownDestination, twilioLandline:
				f.suppress = "invalid_number"
			case twilioUnsubscribed:
				f.revoke = ChannelSMS
			}
		default:
			return effect{}, false
		}
	default:
		return effect{}, false
	}
	return f, true
}

// HandleProviderEvents acts on verified provider events, each exactly once however often the
// provider redelivers it: the first delivery records its dedup key and changes the ledger row's
// delivery status in one transaction; then the contact is suppressed or its consent revoked
// (hard bounce, spam report, provider unsubscribe; audited; skipped when already so); then the
// events of the whole request are published (one call per tenant, deterministic ids) and their
// keys marked finished. A failure anywhere answers an error so the provider redelivers: the
// status is not changed twice, the event ids are the same, and the contact changes are
// idempotent.
func (t *Tracker) HandleProviderEvents(ctx context.Context, evs []ProviderEvent) error {
	byTenant := map[string][]Event{}
	var tenants []string
	var started []ProviderEvent
	prices := map[[2]string]Money{}
	for _, e := range evs {
		tenantID, ev, err := t.beginProviderEvent(ctx, e, prices)
		if err != nil {
			return err
		}
		if ev == nil {
			continue
		}
		if _, ok := byTenant[tenantID]; !ok {
			tenants = append(tenants, tenantID)
		}
		byTenant[tenantID] = append(byTenant[tenantID], *ev)
		started = append(started, e)
	}
	for _, tenantID := range tenants {
		if err := t.publish(ctx, tenantID, byTenant[tenantID]); err != nil {
			return err
		}
	}
	for _, e := range started {
		if err := t.store.FinishProviderEvent(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// beginProviderEvent does what e means up to its publication and returns the event to publish
// and its tenant (nil when there is nothing to do: not ours, not acted on, already finished).
// prices caches the message cost per (tenant, campaign) within one request.
func (t *Tracker) beginProviderEvent(ctx context.Context, e ProviderEvent, prices map[[2]string]Money) (string, *Event, error) {
	f, ok := effectOf(e)
	if !ok || e.Ref == "" || !validRef(e.Ref) || e.MessageID == "" {
		return "", nil, nil
	}
	r, err := t.store.TrackedRecipient(ctx, e.Ref)
	if apperr.HasCode(err, apperr.NotFound) {
		return "", nil, nil // not a message of ours (or its row is gone): nothing to record
	}
	if err != nil {
		return "", nil, fmt.Errorf("look up recipient of %s event: %w", e.Provider, err)
	}
	// SendGrid's sg_message_id is the X-Message-Id the send returned, a dot and a suffix.
	if sent, _, _ := strings.Cut(e.MessageID, "."); r.ProviderID != "" && e.Provider == WebhookSendGrid && sent != r.ProviderID ||
		r.ProviderID != "" && e.Provider == WebhookTwilio && e.MessageID != r.ProviderID {
		return "", nil, nil // the ref was copied onto another message: trust neither
	}
	done, err := t.store.BeginProviderEvent(ctx, e, r.TenantID, f.status)
	if err != nil || done {
		return "", nil, err
	}
	method := AuditMethodSendGridWebhook
	if e.Provider == WebhookTwilio {
		method = AuditMethodTwilioWebhook
	}
	if f.suppress != "" {
		if err := t.suppress(ctx, r, f.suppress, method); err != nil {
			return "", nil, err
		}
	}
	if f.revoke != "" {
		if err := t.revoke(ctx, r.TenantID, r.ContactID, f.revoke, "provider_"+string(e.Provider), method); err != nil {
			return "", nil, err
		}
	}
	ev := f.event
	ev.ID, ev.UserID, ev.CampaignID, ev.Variant, ev.Time = e.ID(), r.ContactID, r.CampaignID, r.Variant, e.Time
	if ev.Time.IsZero() {
		ev.Time = t.now().UTC()
	}
	ev.Properties = map[string]string{"provider": string(e.Provider), "status": e.Type}
	if ev.Type == EventImpression {
		k := [2]string{r.TenantID, r.CampaignID}
		price, ok := prices[k]
		if !ok {
			message, _, err := t.pricing.Costs(ctx, r.TenantID, r.CampaignID)
			if err != nil {
				t.log.WarnContext(ctx, "message cost unknown", "tenant_id", r.TenantID, "campaign_id", r.CampaignID, "error", err)
				return "", nil, errEventsUnavailable
			}
			price, prices[k] = message, message
		}
		ev.Value = price
	}
	return r.TenantID, &ev, nil
}

// The methods of the audit records tracking writes. auth takes from the delivery service only
// records of methods it serves or of its own "delivery." work, and checks the actor: a
// provider's verified webhook is the service's own work (actor service:delivery), a recipient
// holding a link or a phone is anonymous.
const (
	AuditMethodUnsubscribe     = "delivery.tracking/Unsubscribe"
	AuditMethodInboundSMS      = "delivery.tracking/InboundSMS"
	AuditMethodSendGridWebhook = "delivery.tracking/SendGridWebhook"
	AuditMethodTwilioWebhook   = "delivery.tracking/TwilioWebhook"
)

// auditWork scopes the audit records of a change nobody signed in for (a recipient's link, a
// provider's webhook) as method's.
func auditWork(ctx context.Context, method, tenantID string) context.Context {
	actor, kind := "", "anonymous"
	if method == AuditMethodSendGridWebhook || method == AuditMethodTwilioWebhook {
		actor, kind = "service:delivery", "service"
	}
	return audit.WithWork(ctx, func() audit.Record {
		return audit.Record{Method: method, TenantID: tenantID, Actor: actor, ActorKind: kind, Service: "delivery"}
	})
}

// suppress suppresses r's contact unless it is already (a redelivery): one audit record per
// real change. A contact erased since is nothing to suppress.
func (t *Tracker) suppress(ctx context.Context, r Recipient, reason, method string) error {
	c, err := t.audiences.GetContact(ctx, r.TenantID, r.ContactID)
	if apperr.HasCode(err, apperr.NotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read contact to suppress: %w", err)
	}
	if c.Suppressed {
		return nil
	}
	_, err = t.audiences.Suppress(auditWork(ctx, method, r.TenantID), r.TenantID, r.ContactID, reason)
	if apperr.HasCode(err, apperr.NotFound) {
		return nil
	}
	return err
}

// revoke revokes a contact's consent on ch unless it is already revoked, audited as method.
func (t *Tracker) revoke(ctx context.Context, tenantID, contactID string, ch Channel, source, method string) error {
	c, err := t.audiences.GetContact(ctx, tenantID, contactID)
	if apperr.HasCode(err, apperr.NotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read contact to revoke consent: %w", err)
	}
	if c.Consent.For(ch).State == ConsentRevoked {
		return nil
	}
	_, err = t.audiences.SetConsent(auditWork(ctx, method, tenantID), tenantID, contactID, ch, ConsentRevoked, source)
	if apperr.HasCode(err, apperr.NotFound) {
		return nil
	}
	return err
}
