package delivery_test

import (
	"context"
	"testing"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// The one-click unsubscribe revokes email consent at once, audited, and repeating it changes
// nothing more (no second record, one event).
func TestOneClickUnsubscribeRevokesConsent(t *testing.T) {
	r := newTrackRig(t)
	ctx := context.Background()
	tok := tokenOf(t, r.links.Unsubscribe(r.ref), "https://gw.example/u/", "")
	if err := r.tracker.CheckUnsubscribe(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if c := r.contactNow(t); c.Consent.Email.State != delivery.ConsentGranted {
		t.Fatal("showing the page changed consent")
	}
	for range 2 {
		if err := r.tracker.Unsubscribe(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	c := r.contactNow(t)
	if c.Consent.Email.State != delivery.ConsentRevoked || c.Consent.Email.Source != delivery.ConsentSourceUnsubscribeLink {
		t.Errorf("email consent %+v", c.Consent.Email)
	}
	if c.Consent.SMS.State != delivery.ConsentGranted {
		t.Errorf("sms consent changed: %+v", c.Consent.SMS)
	}
	if ok, why := delivery.Eligible(c, delivery.ChannelEmail); ok || why != delivery.SkipNoConsent {
		t.Errorf("unsubscribed contact eligible: %v %q", ok, why)
	}
	recs := r.auditRecords(t)
	if len(recs) != 1 || recs[0].Method != delivery.AuditMethodUnsubscribe || recs[0].Resource != r.contact.ID || recs[0].TenantID != trackTenant ||
		recs[0].ActorKind != "anonymous" || recs[0].Actor != "" {
		t.Errorf("audit records %+v, want one unsubscribe", recs)
	}
	if evs := r.sink.unique(trackTenant); len(evs) != 1 || evs[0].Name != delivery.EventNameUnsubscribed || evs[0].CampaignID != trackCampaign {
		t.Errorf("events %+v", evs)
	}
}

func TestParseSMSKeyword(t *testing.T) {
	for body, want := range map[string]delivery.SMSKeyword{
		"STOP": delivery.SMSOptOut, "stop": delivery.SMSOptOut, " Stop. ": delivery.SMSOptOut, "STOPALL": delivery.SMSOptOut,
		"unsubscribe": delivery.SMSOptOut, "CANCEL": delivery.SMSOptOut, "end": delivery.SMSOptOut, "QUIT!": delivery.SMSOptOut,
		"START": delivery.SMSOptIn, "unstop": delivery.SMSOptIn,
		"please stop": delivery.SMSOther, "STOP IT": delivery.SMSOther, "": delivery.SMSOther, "hello": delivery.SMSOther,
	} {
		if got := delivery.ParseSMSKeyword(body); got != want {
			t.Errorf("%q: %v, want %v", body, got, want)
		}
	}
}

// STOP from a number revokes the sms consent of the tenant's contacts with that number (not
// another tenant's), audited; START grants it again; other messages and forged tenant tokens
// change nothing.
func TestSMSStopAndStart(t *testing.T) {
	r := newTrackRig(t)
	ctx := context.Background()
	granted := delivery.Consent{State: delivery.ConsentGranted, Source: "form"}
	otherTenant, err := r.aud.CreateContact(ctx, "tenant-other", delivery.Contact{Phone: "+14155550100", Consent: delivery.Consents{SMS: granted}})
	if err != nil {
		t.Fatal(err)
	}
	inbound := r.links.InboundSMS(trackTenant)
	tok := tokenOf(t, inbound, "https://gw.example/webhooks/twilio/inbound?cm_tenant=", "")
	other := delivery.TrackingKey{Current: []byte("another key of thirty-two bytes!")}
	if _, err := r.tracker.InboundSMS(ctx, other.Sign(delivery.TokenTenant, trackTenant, ""), "+14155550100", "STOP"); !apperr.HasCode(err, apperr.NotFound) {
		t.Errorf("forged tenant token: %v", err)
	}
	if _, err := r.tracker.InboundSMS(ctx, testKey.Sign(delivery.TokenOpen, trackTenant, ""), "+14155550100", "STOP"); !apperr.HasCode(err, apperr.NotFound) {
		t.Errorf("open token as tenant token: %v", err)
	}
	if n, err := r.tracker.InboundSMS(ctx, tok, "+14155550100", "hello there"); err != nil || n != 0 {
		t.Errorf("plain message: %d %v", n, err)
	}
	if c := r.contactNow(t); c.Consent.SMS.State != delivery.ConsentGranted {
		t.Fatalf("consent changed before STOP: %+v", c.Consent.SMS)
	}
	if n, err := r.tracker.InboundSMS(ctx, tok, "+1 415-555-0100", "Stop"); err != nil || n != 1 {
		t.Fatalf("STOP: %d %v", n, err)
	}
	c := r.contactNow(t)
	if c.Consent.SMS.State != delivery.ConsentRevoked || c.Consent.SMS.Source != delivery.ConsentSourceSMSKeyword {
		t.Errorf("sms consent after STOP %+v", c.Consent.SMS)
	}
	if ok, _ := delivery.Eligible(c, delivery.ChannelSMS); ok {
		t.Error("contact still eligible for sms after STOP")
	}
	if c.Consent.Email.State != delivery.ConsentGranted {
		t.Errorf("email consent changed by STOP: %+v", c.Consent.Email)
	}
	if o, err := r.aud.GetContact(ctx, "tenant-other", otherTenant.ID); err != nil || o.Consent.SMS.State != delivery.ConsentGranted {
		t.Errorf("another tenant's contact with the number: %+v %v", o.Consent.SMS, err)
	}
	if n, err := r.tracker.InboundSMS(ctx, tok, "+14155550100", "STOP"); err != nil || n != 0 {
		t.Errorf("second STOP: %d %v", n, err)
	}
	if n, err := r.tracker.InboundSMS(ctx, tok, "+14155550100", "START"); err != nil || n != 1 {
		t.Errorf("START: %d %v", n, err)
	}
	if c := r.contactNow(t); c.Consent.SMS.State != delivery.ConsentGranted {
		t.Errorf("sms consent after START %+v", c.Consent.SMS)
	}
	recs := r.auditRecords(t)
	if len(recs) != 2 {
		t.Fatalf("audit records %+v, want STOP and START", recs)
	}
	for _, rec := range recs {
		if rec.Method != delivery.AuditMethodInboundSMS || rec.TenantID != trackTenant || rec.Resource != r.contact.ID || rec.ActorKind != "anonymous" {
			t.Errorf("audit record %+v", rec)
		}
	}
}
