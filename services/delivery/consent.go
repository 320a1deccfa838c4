package delivery

import (
	"context"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// Channel is a channel a contact can be reached on and consents to separately.
type Channel string

// The channels delivery sends on.
const (
	ChannelEmail Channel = "email"
	ChannelSMS   Channel = "sms"
)

// Channels lists every channel, in a fixed order.
var Channels = []Channel{ChannelEmail, ChannelSMS}

// Valid reports whether ch is a known channel.
func (ch Channel) Valid() bool { return ch == ChannelEmail || ch == ChannelSMS }

// ConsentState is what a contact said about being contacted on a channel. Only granted allows
// marketing messages: unknown is not consent.
type ConsentState string

// The consent states.
const (
	ConsentUnknown ConsentState = "unknown"
	ConsentGranted ConsentState = "granted"
	ConsentRevoked ConsentState = "revoked"
)

// Valid reports whether s is a known state.
func (s ConsentState) Valid() bool {
	return s == ConsentUnknown || s == ConsentGranted || s == ConsentRevoked
}

// MaxConsentSourceLen bounds a consent's source ("csv_import", "signup_form", "unsubscribe"…).
const MaxConsentSourceLen = 64

// Consent is a contact's consent on one channel, with where and when it was given or taken
// back: the proof a regulator asks for.
type Consent struct {
	State ConsentState
	// Source says how the state was learnt (an import, a form, an unsubscribe link, STOP).
	Source string
	// Time is when the state was learnt; zero while unknown.
	Time time.Time
}

// Consents holds a contact's consent per channel.
type Consents struct {
	Email Consent
	SMS   Consent
}

// For returns the consent on ch.
func (cs Consents) For(ch Channel) Consent {
	if ch == ChannelSMS {
		return cs.SMS
	}
	return cs.Email
}

// set replaces the consent on ch.
func (cs *Consents) set(ch Channel, c Consent) {
	if ch == ChannelSMS {
		cs.SMS = c
	} else {
		cs.Email = c
	}
}

// normalize makes an unset consent explicitly unknown.
func (cs *Consents) normalize() {
	for _, c := range []*Consent{&cs.Email, &cs.SMS} {
		if c.State == "" {
			*c = Consent{State: ConsentUnknown}
		}
	}
}

func validateConsent(v *apperr.Violations, field string, c Consent) {
	if !c.State.Valid() {
		v.Add(field+".state", "must be granted, revoked or unknown")
	}
	if len(c.Source) > MaxConsentSourceLen || !printableText(c.Source) {
		v.Add(field+".source", "must be at most %d printable characters", MaxConsentSourceLen)
	}
	if c.State != ConsentUnknown && c.Source == "" {
		v.Add(field+".source", "is required when consent is granted or revoked")
	}
}

// SkipReason says why a contact cannot be sent a message on a channel.
type SkipReason string

// The reasons a contact is not eligible; the sender records them on the skipped ledger row.
const (
	SkipSuppressed SkipReason = "suppressed"
	SkipNoAddress  SkipReason = "no_address"
	SkipNoConsent  SkipReason = "no_consent"
)

// Eligible reports whether c may be sent a marketing message on ch now, and if not, why: the
// contact must not be suppressed, must have an address for the channel (an email address, a
// phone number) and must have granted consent on it — unknown consent is not consent. The
// sender calls it for every recipient right before the send, so a change made after the
// segment was evaluated (an unsubscribe, a bounce) still counts.
func Eligible(c Contact, ch Channel) (bool, SkipReason) {
	switch {
	case c.Suppressed:
		return false, SkipSuppressed
	case ch == ChannelEmail && c.Email == "", ch == ChannelSMS && c.Phone == "", !ch.Valid():
		return false, SkipNoAddress
	case c.Consent.For(ch).State != ConsentGranted:
		return false, SkipNoConsent
	}
	return true, ""
}

// SetConsent records a contact's consent on a channel, with its source, at the service's
// clock's time. The change is audited.
func (a *Audiences) SetConsent(ctx context.Context, tenantID, id string, ch Channel, state ConsentState, source string) (Contact, error) {
	var v apperr.Violations
	if !ch.Valid() {
		v.Add("channel", "must be email or sms")
	}
	c := Consent{State: state, Source: source, Time: a.now().UTC()}
	if state == ConsentUnknown {
		c.Time = time.Time{}
	}
	validateConsent(&v, "consent", c)
	if err := apperr.First(audienceTenant(tenantID), checkContactID("id", id), v.Err()); err != nil {
		return Contact{}, err
	}
	return a.store.UpdateContact(ctx, tenantID, id, func(cur *Contact) error {
		cur.Consent.set(ch, c)
		return nil
	}, takeAudienceRecord(ctx, tenantID, id))
}

// MaxSuppressionReasonLen bounds a suppression's reason.
const MaxSuppressionReasonLen = 128

// Suppress marks a contact as never to be sent to (a hard bounce, a complaint, an operator's
// decision), whatever its consent. Audited.
func (a *Audiences) Suppress(ctx context.Context, tenantID, id, reason string) (Contact, error) {
	var v apperr.Violations
	if reason == "" || len(reason) > MaxSuppressionReasonLen || !printableText(reason) {
		v.Add("reason", "must be 1-%d printable characters", MaxSuppressionReasonLen)
	}
	if err := apperr.First(audienceTenant(tenantID), checkContactID("id", id), v.Err()); err != nil {
		return Contact{}, err
	}
	return a.store.UpdateContact(ctx, tenantID, id, func(cur *Contact) error {
		cur.Suppressed, cur.SuppressionReason = true, reason
		return nil
	}, takeAudienceRecord(ctx, tenantID, id))
}

// Unsuppress lifts a contact's suppression. Consent is unchanged: a contact that revoked it
// stays ineligible. Audited.
func (a *Audiences) Unsuppress(ctx context.Context, tenantID, id string) (Contact, error) {
	if err := apperr.First(audienceTenant(tenantID), checkContactID("id", id)); err != nil {
		return Contact{}, err
	}
	return a.store.UpdateContact(ctx, tenantID, id, func(cur *Contact) error {
		cur.Suppressed, cur.SuppressionReason = false, ""
		return nil
	}, takeAudienceRecord(ctx, tenantID, id))
}
