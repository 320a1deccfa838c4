package delivery

import (
	"context"
	"strings"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// TokenTenant is the kind of the token an inbound SMS webhook URL carries: it names the
// tenant the receiving number or messaging service belongs to. Twilio calls a configured URL
// per messaging service, so the operator sets that URL to TrackingLinks.InboundSMS(tenant)
// when the tenant's messaging service is set up: the tenant then comes from a value only
// delivery can sign, never from what the sender of the SMS controls.
const TokenTenant TokenKind = 't'

// InboundSMS returns the URL Twilio posts a tenant's inbound messages to (its messaging
// service's "A message comes in" webhook): /webhooks/twilio/inbound?cm_tenant=<signed tenant>.
func (l TrackingLinks) InboundSMS(tenantID string) string {
	if !validRef(tenantID) {
		return ""
	}
	return l.base() + "/webhooks/twilio/inbound?cm_tenant=" + l.Key.Sign(TokenTenant, tenantID, "")
}

// The sources recorded with consent changes made by recipients.
const (
	ConsentSourceUnsubscribeLink = "unsubscribe_link"
	ConsentSourceSMSKeyword      = "sms_keyword"
)

// CheckUnsubscribe verifies an unsubscribe token (for the page that offers the button): a token
// that does not verify, or whose ledger row is gone, is NotFound.
func (t *Tracker) CheckUnsubscribe(ctx context.Context, token string) error {
	_, _, err := t.recipientOf(ctx, TokenUnsubscribe, token)
	return err
}

// Unsubscribe revokes the email consent of the contact an unsubscribe token names, at once
// (RFC 8058: the one-click POST itself unsubscribes, no confirmation), audited, and reports a
// message_unsubscribed event for the campaign. Repeating it changes nothing more and succeeds.
func (t *Tracker) Unsubscribe(ctx context.Context, token string) error {
	r, _, err := t.recipientOf(ctx, TokenUnsubscribe, token)
	if err != nil {
		return err
	}
	if err := t.revoke(ctx, r.TenantID, r.ContactID, ChannelEmail, ConsentSourceUnsubscribeLink, AuditMethodUnsubscribe); err != nil {
		return err
	}
	return t.publish(ctx, r.TenantID, []Event{{ID: "unsubscribe:" + r.ID, Type: EventTrack, Name: EventNameUnsubscribed,
		UserID: r.ContactID, CampaignID: r.CampaignID, Variant: r.Variant, Time: t.now().UTC(),
		Properties: map[string]string{"source": ConsentSourceUnsubscribeLink}}})
}

// SMSKeyword is what an inbound SMS asks for.
type SMSKeyword int

// The keywords' meanings.
const (
	SMSOther SMSKeyword = iota
	SMSOptOut
	SMSOptIn
)

// ParseSMSKeyword recognises the opt-out keywords carriers require (STOP, STOPALL, UNSUBSCRIBE,
// CANCEL, END, QUIT) and the opt-in ones (START, UNSTOP), as the whole message, in any case,
// with surrounding spaces and punctuation ignored.
func ParseSMSKeyword(body string) SMSKeyword {
	w := strings.ToUpper(strings.Trim(body, " \t\r\n.!"))
	switch w {
	case "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT":
		return SMSOptOut
	case "START", "UNSTOP":
		return SMSOptIn
	}
	return SMSOther
}

// InboundSMS acts on a verified inbound SMS to the tenant tenantToken names (see TokenTenant):
// an opt-out keyword revokes, an opt-in keyword grants, the sms consent of every contact of
// the tenant with the number from, audited; any other message is ignored. It returns how many
// contacts changed.
func (t *Tracker) InboundSMS(ctx context.Context, tenantToken, from, body string) (int, error) {
	tenantID, _, err := t.key.Verify(TokenTenant, tenantToken)
	if err != nil {
		return 0, errNoSuchLink
	}
	kw := ParseSMSKeyword(body)
	if kw == SMSOther || from == "" {
		return 0, nil
	}
	cs, err := t.audiences.ExportContact(ctx, tenantID, []Identifier{{Kind: IdentifierPhone, Value: from}})
	if apperr.HasCode(err, apperr.Invalid) {
		return 0, nil // not a number a contact can have (a short code, an alphanumeric sender)
	}
	if err != nil {
		return 0, err
	}
	changed := 0
	for _, c := range cs {
		var err error
		switch {
		case kw == SMSOptOut && c.Consent.SMS.State != ConsentRevoked:
			err = t.revoke(ctx, tenantID, c.ID, ChannelSMS, ConsentSourceSMSKeyword, AuditMethodInboundSMS)
		case kw == SMSOptIn && c.Consent.SMS.State != ConsentGranted:
			_, err = t.audiences.SetConsent(auditWork(ctx, AuditMethodInboundSMS, tenantID), tenantID, c.ID, ChannelSMS, ConsentGranted, ConsentSourceSMSKeyword)
		default:
			continue
		}
		if err != nil {
			return changed, err
		}
		changed++
	}
	return changed, nil
}
