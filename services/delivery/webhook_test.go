package delivery_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/services/delivery"
)

func (r *trackRig) status(t *testing.T) string {
	t.Helper()
	s, err := r.tracking.DeliveryStatus(context.Background(), trackTenant, r.ref)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (r *trackRig) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := r.store.Pool().Exec(context.Background(), sql, args...); err != nil {
		t.Fatal(err)
	}
}

// The same webhook event delivered twice (SendGrid retries, sometimes under a new sg_event_id)
// is one event in the pipeline and one change of the ledger row's status.
func TestRepeatedWebhookCountedOnce(t *testing.T) {
	r := newTrackRig(t)
	ctx := context.Background()
	at := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	delivered := delivery.ProviderEvent{Provider: delivery.WebhookSendGrid, MessageID: "msg-1.filter-0", Type: "delivered", Time: at, Ref: r.ref}
	if err := r.tracker.HandleProviderEvents(ctx, []delivery.ProviderEvent{delivered}); err != nil {
		t.Fatal(err)
	}
	if s := r.status(t); s != "delivered" {
		t.Fatalf("status %q after delivered", s)
	}
	// Were the redelivery to change the status again, "probe" would be overwritten.
	r.exec(t, `UPDATE ledger SET delivery_status = 'probe'`)
	if err := r.tracker.HandleProviderEvents(ctx, []delivery.ProviderEvent{delivered, delivered}); err != nil {
		t.Fatal(err)
	}
	if s := r.status(t); s != "probe" {
		t.Errorf("status %q: the redelivery changed it again", s)
	}
	evs := r.sink.unique(trackTenant)
	if n := len(r.sink.events[trackTenant]); len(evs) != 1 || n != 1 {
		t.Fatalf("%d published, %d unique: %+v; want one", n, len(evs), evs)
	}
	e := evs[0]
	if e.Type != delivery.EventImpression || e.Value != messageCost || e.CampaignID != trackCampaign || e.Variant != r.variant ||
		e.UserID != r.contact.ID || !e.Time.Equal(at) || e.ID != delivered.ID() {
		t.Errorf("delivered event %+v", e)
	}
}

// A webhook whose event could not be published is answered with a retryable error; the
// provider's redelivery publishes it (same id) without changing the status a second time.
func TestWebhookRedeliveryAfterAFailureFinishesOnce(t *testing.T) {
	r := newTrackRig(t)
	ctx := context.Background()
	ev := delivery.ProviderEvent{Provider: delivery.WebhookTwilio, MessageID: "SM1", Type: "delivered", Ref: r.ref}
	r.sink.fail = errors.New("ingest down")
	if err := r.tracker.HandleProviderEvents(ctx, []delivery.ProviderEvent{ev}); err == nil {
		t.Fatal("a webhook whose event was not stored answered success")
	}
	if s := r.status(t); s != "delivered" {
		t.Fatalf("status %q", s)
	}
	r.exec(t, `UPDATE ledger SET delivery_status = 'probe'`)
	r.sink.fail = nil
	if err := r.tracker.HandleProviderEvents(ctx, []delivery.ProviderEvent{ev}); err != nil {
		t.Fatal(err)
	}
	if err := r.tracker.HandleProviderEvents(ctx, []delivery.ProviderEvent{ev}); err != nil {
		t.Fatal(err)
	}
	if evs := r.sink.events[trackTenant]; len(evs) != 1 || evs[0].ID != ev.ID() || evs[0].Value != messageCost {
		t.Errorf("events %+v, want the delivered one once", evs)
	}
	if s := r.status(t); s != "probe" {
		t.Errorf("status %q changed again on redelivery", s)
	}
}

// A hard bounce and a spam report suppress the contact (audited, once however often the
// provider redelivers); a soft bounce does not. Each is a track event, unpriced.
func TestHardBounceAndComplaintSuppress(t *testing.T) {
	at := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	for name, tc := range map[string]struct {
		ev       delivery.ProviderEvent
		suppress string
		evName   string
	}{
		"hard bounce": {delivery.ProviderEvent{Provider: delivery.WebhookSendGrid, Type: "bounce", BounceType: "bounce"}, "hard_bounce", delivery.EventNameBounced},
		"soft bounce": {delivery.ProviderEvent{Provider: delivery.WebhookSendGrid, Type: "bounce", BounceType: "blocked"}, "", delivery.EventNameBounced},
		"spam report": {delivery.ProviderEvent{Provider: delivery.WebhookSendGrid, Type: "spamreport"}, "spam_report", delivery.EventNameSpamReport},
		"dropped":     {delivery.ProviderEvent{Provider: delivery.WebhookSendGrid, Type: "dropped"}, "", delivery.EventNameDropped},
		"sms landline": {delivery.ProviderEvent{Provider: delivery.WebhookTwilio, Type: "undelivered", ErrorCode: 30006},
			"invalid_number", delivery.EventNameUndelivered},
		"sms failed": {delivery.ProviderEvent{Provider: delivery.WebhookTwilio, Type: "failed", ErrorCode: 30001}, "", delivery.EventNameFailed},
	} {
		t.Run(name, func(t *testing.T) {
			r := newTrackRig(t)
			ev := tc.ev
			ev.MessageID, ev.Time, ev.Ref = "msg-1", at, r.ref
			for range 2 {
				if err := r.tracker.HandleProviderEvents(context.Background(), []delivery.ProviderEvent{ev}); err != nil {
					t.Fatal(err)
				}
			}
			c := r.contactNow(t)
			if c.Suppressed != (tc.suppress != "") || c.SuppressionReason != tc.suppress {
				t.Errorf("suppressed %v %q, want %q", c.Suppressed, c.SuppressionReason, tc.suppress)
			}
			recs := r.auditRecords(t)
			want := 0
			if tc.suppress != "" {
				want = 1
			}
			if len(recs) != want {
				t.Fatalf("%d audit records, want %d: %+v", len(recs), want, recs)
			}
			for _, rec := range recs {
				method := delivery.AuditMethodSendGridWebhook
				if ev.Provider == delivery.WebhookTwilio {
					method = delivery.AuditMethodTwilioWebhook
				}
				if rec.Method != method || rec.TenantID != trackTenant || rec.Resource != r.contact.ID || rec.Actor != "service:delivery" || rec.ActorKind != "service" {
					t.Errorf("audit record %+v", rec)
				}
			}
			evs := r.sink.unique(trackTenant)
			if len(evs) != 1 || evs[0].Type != delivery.EventTrack || evs[0].Name != tc.evName || evs[0].Value != (delivery.Money{}) {
				t.Errorf("events %+v", evs)
			}
			if s := r.status(t); s != ev.Type {
				t.Errorf("status %q, want %q", s, ev.Type)
			}
		})
	}
}

// A provider's unsubscribe (SendGrid's unsubscribe and group unsubscribe, Twilio's 21610 "the
// recipient replied STOP") revokes the channel's consent.
func TestProviderUnsubscribeRevokesConsent(t *testing.T) {
	for name, tc := range map[string]struct {
		ev delivery.ProviderEvent
		ch delivery.Channel
	}{
		"sendgrid unsubscribe":       {delivery.ProviderEvent{Provider: delivery.WebhookSendGrid, Type: "unsubscribe"}, delivery.ChannelEmail},
		"sendgrid group unsubscribe": {delivery.ProviderEvent{Provider: delivery.WebhookSendGrid, Type: "group_unsubscribe"}, delivery.ChannelEmail},
		"twilio 21610":               {delivery.ProviderEvent{Provider: delivery.WebhookTwilio, Type: "undelivered", ErrorCode: 21610}, delivery.ChannelSMS},
	} {
		t.Run(name, func(t *testing.T) {
			r := newTrackRig(t)
			ev := tc.ev
			ev.MessageID, ev.Time, ev.Ref = "msg-1", time.Unix(1_700_000_000, 0), r.ref
			if err := r.tracker.HandleProviderEvents(context.Background(), []delivery.ProviderEvent{ev}); err != nil {
				t.Fatal(err)
			}
			c := r.contactNow(t)
			if got := c.Consent.For(tc.ch); got.State != delivery.ConsentRevoked || got.Source != "provider_"+string(ev.Provider) {
				t.Errorf("consent %+v", got)
			}
			if recs := r.auditRecords(t); len(recs) != 1 {
				t.Errorf("audit records %+v, want one", recs)
			}
		})
	}
}

// Events that are not ours, or that delivery does not act on, change nothing.
func TestWebhookEventsIgnored(t *testing.T) {
	r := newTrackRig(t)
	r.exec(t, `UPDATE ledger SET provider_id = 'msg-real'`)
	for name, ev := range map[string]delivery.ProviderEvent{
		"no ref":            {Provider: delivery.WebhookSendGrid, MessageID: "msg-real.1", Type: "bounce"},
		"unknown ref":       {Provider: delivery.WebhookSendGrid, MessageID: "msg-real.1", Type: "bounce", Ref: "987654"},
		"other message":     {Provider: delivery.WebhookSendGrid, MessageID: "msg-other.1", Type: "bounce", Ref: r.ref},
		"longer message id": {Provider: delivery.WebhookSendGrid, MessageID: "msg-really.1", Type: "bounce", Ref: r.ref},
		"other sms":         {Provider: delivery.WebhookTwilio, MessageID: "SMother", Type: "failed", ErrorCode: 30006, Ref: r.ref},
		"processed":         {Provider: delivery.WebhookSendGrid, MessageID: "msg-real.1", Type: "processed", Ref: r.ref},
		"provider's click":  {Provider: delivery.WebhookSendGrid, MessageID: "msg-real.1", Type: "click", Ref: r.ref},
		"sms queued":        {Provider: delivery.WebhookTwilio, MessageID: "msg-real", Type: "queued", Ref: r.ref},
	} {
		if err := r.tracker.HandleProviderEvents(context.Background(), []delivery.ProviderEvent{ev}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if evs := r.sink.unique(trackTenant); len(evs) != 0 {
		t.Errorf("events %+v", evs)
	}
	if c := r.contactNow(t); c.Suppressed {
		t.Error("contact suppressed")
	}
	if s := r.status(t); s != "" {
		t.Errorf("status %q", s)
	}
}

// The events of one webhook request are published together, one call per tenant (SendGrid
// posts hundreds at once), each tenant's to its own.
func TestWebhookBatchPublishedPerTenant(t *testing.T) {
	r := newTrackRig(t)
	ctx := context.Background()
	other, err := r.aud.CreateContact(ctx, "tenant-u", delivery.Contact{Email: "bo@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	otherRef, _ := r.addRecipient(t, "tenant-u", "campaign-u", other.ID, other.Email)
	second, err := r.aud.CreateContact(ctx, trackTenant, delivery.Contact{Email: "cy@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	secondRef, _ := r.addRecipient(t, trackTenant, trackCampaign, second.ID, second.Email)
	at := time.Unix(1_764_410_000, 0)
	var evs []delivery.ProviderEvent
	for i, ref := range []string{r.ref, otherRef, secondRef} {
		evs = append(evs, delivery.ProviderEvent{Provider: delivery.WebhookSendGrid, MessageID: "m" + strconv.Itoa(i), Type: "delivered", Time: at, Ref: ref})
	}
	if err := r.tracker.HandleProviderEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if r.sink.calls != 2 || len(r.sink.unique(trackTenant)) != 2 || len(r.sink.unique("tenant-u")) != 1 {
		t.Errorf("%d publish calls, %d and %d events; want 2 calls, 2 and 1", r.sink.calls, len(r.sink.unique(trackTenant)), len(r.sink.unique("tenant-u")))
	}
}
