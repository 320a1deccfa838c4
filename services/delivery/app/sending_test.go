package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	sgstandin "github.com/campaignmesh/campaignmesh/internal/standin/sendgrid"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/app"
)

type everyone struct{}

func (everyone) SendPlan(context.Context, string, string) (delivery.SendPlan, bool, error) {
	return delivery.SendPlan{Channel: delivery.ChannelEmail}, true, nil
}

func compose(_ context.Context, r delivery.Recipient) (delivery.Message, error) {
	return delivery.Message{Subject: "Hello " + r.Variant, Text: "Hello", HTML: "<p>Hello</p>"}, nil
}

// The service as cmd/delivery builds it, with the SendGrid stand-in as its provider and the
// real campaigns service (same mesh CA, delivery's identity) as the source of campaign
// states: activating an email campaign sends each consenting contact one message, pausing it
// stops the sends, and the senders' counters are on /metrics.
func TestSendsActiveCampaigns(t *testing.T) {
	t.Parallel()
	const n = 1000
	ca := mtlstest.NewCA(t)
	camp := servicetest.StartCampaigns(t, servicetest.CampaignsOptions{CA: ca})
	sg, err := sgstandin.New(sgstandin.Config{APIKey: "SG.app-test"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sg)
	t.Cleanup(func() { sg.Close(); srv.Close() })
	keyFile := filepath.Join(t.TempDir(), "sendgrid.key")
	if err := os.WriteFile(keyFile, []byte("SG.app-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := servicetest.StartDelivery(t, servicetest.DeliveryOptions{CA: ca, Verifier: meshtest.NewIssuer(t).Verifier(), Config: func(c *app.Config) {
		s := &c.Sending
		s.CampaignsAddr, s.SendGridURL, s.SendGridAPIKeyFile, s.SendGridFrom = camp.Addr(), srv.URL, keyFile, "news@shop.example"
		s.Compose, s.Plans, s.CheckEvery = compose, everyone{}, 200*time.Millisecond
		s.SendRate = 200 // slow enough for the pause to land mid-send
	}})

	const tenant = "t-app"
	us := make([]delivery.ContactUpsert, n)
	for i := range us {
		us[i] = delivery.ContactUpsert{Email: fmt.Sprintf("user%04d@example.com", i),
			Consent: delivery.Consents{Email: delivery.Consent{State: delivery.ConsentGranted, Source: "test"}}}
	}
	if _, err := d.Store().UpsertContacts(context.Background(), tenant, us, time.Now()); err != nil {
		t.Fatal(err)
	}
	p := &authn.Principal{TenantID: tenant, Subject: "u", Role: rbac.Manager, Permissions: rbac.Manager.Permissions()}
	wall, _ := campaigns.ParseWallClock("2099-01-01T00:00")
	ctx := context.Background()
	c, err := camp.Service().CreateCampaign(ctx, p, campaigns.Campaign{Name: "spring", Channel: campaigns.ChannelEmail,
		Schedule: campaigns.Schedule{Start: wall, TimeZone: "UTC"}, Budget: campaigns.Budget{TotalMicros: 1, Currency: "EUR"},
		Variants: []campaigns.Variant{{Name: "a", Weight: 70}, {Name: "b", Weight: 30}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []campaigns.Action{campaigns.ActSchedule, campaigns.ActActivate} {
		if _, err := camp.Service().Transition(ctx, p, c.ID, a, ""); err != nil {
			t.Fatal(err)
		}
	}
	meshtest.Eventually(t, time.Minute, func() bool { return sg.Total() >= 100 }, "first messages")
	if _, err := camp.Service().Transition(ctx, p, c.ID, campaigns.ActPause, ""); err != nil {
		t.Fatal(err)
	}
	// Within a few state checks the sends stop.
	var paused int
	meshtest.Eventually(t, 10*time.Second, func() bool {
		before := sg.Total()
		if meshtest.Within(time.Second, func() bool { return sg.Total() != before }) {
			return false
		}
		paused = before
		return true
	}, "sends stopped after the pause")
	if paused >= n {
		t.Fatalf("the pause came after the last message")
	}
	if _, err := camp.Service().Transition(ctx, p, c.ID, campaigns.ActResume, ""); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, time.Minute, func() bool { return sg.Total() >= n }, "campaign sent after the resume")
	for i := range n {
		if got := sg.Count(fmt.Sprintf("user%04d@example.com", i)); got != 1 {
			t.Fatalf("user%04d got %d messages", i, got)
		}
	}
	t.Logf("paused at %d of %d; resumed and finished", paused, n)
	metrics := servicetest.AdminGet(t, d.AdminAddr(), "/metrics")
	if !strings.Contains(metrics, fmt.Sprintf(`delivery_messages_total{channel="email",outcome="sent"} %d`, n)) ||
		!strings.Contains(metrics, `delivery_retries_total{channel="sms"} 0`) {
		t.Errorf("/metrics lacks the senders' counters:\n%s", grepLines(metrics, "delivery_"))
	}
}

// A secret file that is missing stops the build with the flag named; the secret never shows.
func TestSendingSecretFiles(t *testing.T) {
	t.Parallel()
	o := servicetest.DeliveryOptions{Verifier: meshtest.NewIssuer(t).Verifier()}
	cfg := servicetest.DeliveryConfig(t, &o)
	cfg.Sending.SendGridAPIKeyFile, cfg.Sending.SendGridFrom = filepath.Join(t.TempDir(), "missing"), "news@shop.example"
	if a, err := app.New(context.Background(), cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "-sendgrid-api-key-file") {
		if a != nil {
			a.Close()
		}
		t.Errorf("missing key file: %v", err)
	}
	cfg = servicetest.DeliveryConfig(t, &o)
	cfg.Sending.TwilioAccountSID, cfg.Sending.TwilioMessagingServiceSID = "AC123", "MG123"
	cfg.Sending.TwilioAuthTokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(cfg.Sending.TwilioAuthTokenFile, []byte("  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if a, err := app.New(context.Background(), cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "-twilio-auth-token-file") {
		if a != nil {
			a.Close()
		}
		t.Errorf("empty token file: %v", err)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
