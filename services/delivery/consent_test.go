package delivery_test

import (
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/services/delivery"
)

func TestEligible(t *testing.T) {
	granted := delivery.Consent{State: delivery.ConsentGranted, Source: "form", Time: time.Unix(1, 0)}
	revoked := delivery.Consent{State: delivery.ConsentRevoked, Source: "unsubscribe", Time: time.Unix(2, 0)}
	full := delivery.Contact{Email: "a@b.io", Phone: "+14155550123", Consent: delivery.Consents{Email: granted, SMS: granted}}
	with := func(f func(*delivery.Contact)) delivery.Contact {
		c := full
		f(&c)
		return c
	}
	for name, tc := range map[string]struct {
		c    delivery.Contact
		ch   delivery.Channel
		ok   bool
		want delivery.SkipReason
	}{
		"email ok":              {full, delivery.ChannelEmail, true, ""},
		"sms ok":                {full, delivery.ChannelSMS, true, ""},
		"suppressed":            {with(func(c *delivery.Contact) { c.Suppressed = true }), delivery.ChannelEmail, false, delivery.SkipSuppressed},
		"suppressed beats all":  {with(func(c *delivery.Contact) { c.Suppressed, c.Email = true, "" }), delivery.ChannelEmail, false, delivery.SkipSuppressed},
		"no email":              {with(func(c *delivery.Contact) { c.Email = "" }), delivery.ChannelEmail, false, delivery.SkipNoAddress},
		"no phone":              {with(func(c *delivery.Contact) { c.Phone = "" }), delivery.ChannelSMS, false, delivery.SkipNoAddress},
		"email needs no phone":  {with(func(c *delivery.Contact) { c.Phone = "" }), delivery.ChannelEmail, true, ""},
		"unknown channel":       {full, delivery.Channel("push"), false, delivery.SkipNoAddress},
		"email revoked":         {with(func(c *delivery.Contact) { c.Consent.Email = revoked }), delivery.ChannelEmail, false, delivery.SkipNoConsent},
		"unknown is no consent": {with(func(c *delivery.Contact) { c.Consent.SMS = delivery.Consent{State: delivery.ConsentUnknown} }), delivery.ChannelSMS, false, delivery.SkipNoConsent},
		"zero is no consent":    {with(func(c *delivery.Contact) { c.Consent.SMS = delivery.Consent{} }), delivery.ChannelSMS, false, delivery.SkipNoConsent},
		"sms revoked, email ok": {with(func(c *delivery.Contact) { c.Consent.SMS = revoked }), delivery.ChannelEmail, true, ""},
	} {
		t.Run(name, func(t *testing.T) {
			ok, why := delivery.Eligible(tc.c, tc.ch)
			if ok != tc.ok || why != tc.want {
				t.Errorf("Eligible = %v, %q; want %v, %q", ok, why, tc.ok, tc.want)
			}
		})
	}
}
