package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/app"
)

// The defaults are the delivery service's ports (7106, admin 9106) and auth's address; the
// database and the mesh certificate are required; the probes' health-only port is off unless
// set (flag or CM_DELIVERY_HEALTH_LISTEN); a negative connection age is refused.
func TestFlags(t *testing.T) {
	base := []string{"-postgres-url", "postgres://x", "-tls-cert", "c", "-tls-key", "k", "-tls-ca", "ca"}
	s, err := parse(base)
	if err != nil || s.cfg.Listen != "127.0.0.1:7106" || s.cfg.AdminListen != "127.0.0.1:9106" || s.cfg.AuthAddr != "127.0.0.1:7101" ||
		s.cfg.HealthListen != "" || s.cfg.ConnectionAge != grpcserver.DefaultConnectionAge || s.cfg.PostgresURL != "postgres://x" {
		t.Fatalf("defaults: %+v, %v", s.cfg, err)
	}
	if _, err := parse(nil); err == nil || !strings.Contains(err.Error(), "-postgres-url is required") || !strings.Contains(err.Error(), "-tls-cert") {
		t.Errorf("no database or certificate: %v", err)
	}
	t.Setenv("CM_DELIVERY_HEALTH_LISTEN", ":8081")
	s, err = parse(append([]string{"-max-connection-age", "1m", "-max-connection-age-grace", "30s"}, base...))
	if want := (grpcserver.ConnectionAge{Max: time.Minute, Grace: 30 * time.Second}); err != nil || s.cfg.HealthListen != ":8081" || s.cfg.ConnectionAge != want {
		t.Errorf("set: health %q, age %+v, %v; want :8081, %+v", s.cfg.HealthListen, s.cfg.ConnectionAge, err, want)
	}
	if _, err := parse(append([]string{"-max-connection-age", "-1s"}, base...)); err == nil || !strings.Contains(err.Error(), "-max-connection-age") {
		t.Errorf("a negative age: %v, want it refused", err)
	}
}

// The sending flags: defaults send nothing (no provider) and follow campaigns on its default
// address; the frequency cap parses as N/window; bad values are refused with the flag named.
func TestSendingFlags(t *testing.T) {
	base := []string{"-postgres-url", "postgres://x", "-tls-cert", "c", "-tls-key", "k", "-tls-ca", "ca"}
	s, err := parse(base)
	sc := s.cfg.Sending
	if err != nil || sc.CampaignsAddr != "127.0.0.1:7103" || sc.SendGridURL != "https://api.sendgrid.com" || sc.TwilioURL != "https://api.twilio.com" ||
		sc.SendGridAPIKeyFile != "" || sc.TwilioAccountSID != "" || sc.SendRate != 0 || sc.SendConcurrency != 32 || !sc.FrequencyCap.IsZero() {
		t.Fatalf("defaults: %+v, %v", sc, err)
	}
	s, err = parse(append([]string{"-sendgrid-api-key-file", "/k", "-sendgrid-from", "news@shop.example", "-send-rate", "50",
		"-send-concurrency", "8", "-frequency-cap", "3/24h", "-twilio-url", "http://127.0.0.1:8792"}, base...))
	sc = s.cfg.Sending
	if err != nil || sc.SendGridAPIKeyFile != "/k" || sc.SendRate != 50 || sc.SendConcurrency != 8 ||
		sc.FrequencyCap.Max != 3 || sc.FrequencyCap.Window != 24*time.Hour || sc.TwilioURL != "http://127.0.0.1:8792" {
		t.Errorf("set: %+v, %v", sc, err)
	}
	for flag, args := range map[string][]string{
		"-frequency-cap":    {"-frequency-cap", "3"},
		"-send-rate":        {"-send-rate", "-1"},
		"-send-concurrency": {"-send-concurrency", "0"},
		"-send-lease":       {"-send-lease", "5s"},
		"-send-settle":      {"-send-lease", "1m", "-send-settle", "30s"},
		"-drive-lease":      {"-drive-lease", "1s"},
	} {
		if _, err := parse(append(args, base...)); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%v: %v, want %s refused", args, err, flag)
		}
	}
}

// The audience flags: analytics' default address; NATS off unless -nats-url is set, and then
// the privacy key is required; the import limits.
func TestAudienceFlags(t *testing.T) {
	base := []string{"-postgres-url", "postgres://x", "-tls-cert", "c", "-tls-key", "k", "-tls-ca", "ca"}
	s, err := parse(base)
	if err != nil || s.cfg.AnalyticsAddr != "127.0.0.1:7104" || s.cfg.NATS.URL != "" || s.cfg.ImportMaxBytes != 256<<20 || s.cfg.ImportMaxRows != 1_000_000 {
		t.Fatalf("defaults: analytics %q nats %q import %d bytes %d rows, %v", s.cfg.AnalyticsAddr, s.cfg.NATS.URL, s.cfg.ImportMaxBytes, s.cfg.ImportMaxRows, err)
	}
	if _, err := parse(append([]string{"-nats-url", "nats://127.0.0.1:14222", "-nats-password-file", "p"}, base...)); err == nil || !strings.Contains(err.Error(), "-privacy-key-file") {
		t.Errorf("NATS without the privacy key: %v", err)
	}
	s, err = parse(append([]string{"-nats-url", "nats://h:1", "-nats-password-file", "p", "-privacy-key-file", "k", "-analytics-addr", "", "-import-max-bytes", "2048"}, base...))
	if err != nil || s.cfg.NATS.URL != "nats://h:1" || s.cfg.NATS.User != "delivery" || s.cfg.AnalyticsAddr != "" || s.cfg.ImportMaxBytes != 2048 {
		t.Errorf("set: %+v %v", s.cfg.NATS, err)
	}
	if _, err := parse(append([]string{"-import-max-bytes", "10"}, base...)); err == nil {
		t.Error("a 10-byte import limit accepted")
	}
}

// -print-inbound-sms-url needs only the tracking key and the public URL; the URL it prints
// carries the tenant signed under the key.
func TestPrintInboundSMSURL(t *testing.T) {
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte(strings.Repeat("k", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := parse([]string{"-print-inbound-sms-url", "tenant-1", "-tracking-key-file", key, "-public-url", "https://hooks.example"})
	if err != nil || s.inboundTenant != "tenant-1" {
		t.Fatalf("parse: %+v %v", s, err)
	}
	u, err := app.InboundSMSURL(s.cfg.Tracking, s.inboundTenant)
	if err != nil || !strings.HasPrefix(u, "https://hooks.example/webhooks/twilio/inbound?cm_tenant=") {
		t.Fatalf("url %q %v", u, err)
	}
	tok := strings.TrimPrefix(u, "https://hooks.example/webhooks/twilio/inbound?cm_tenant=")
	if tenant, _, err := (delivery.TrackingKey{Current: []byte(strings.Repeat("k", 32))}).Verify(delivery.TokenTenant, tok); err != nil || tenant != "tenant-1" {
		t.Errorf("token names %q (%v)", tenant, err)
	}
	if _, err := app.InboundSMSURL(app.DefaultTrackingConfig(), "tenant-1"); err == nil {
		t.Error("no key file: no error")
	}
}

// Tracking is off without a key file; with one, the public URL must be an http(s) origin.
func TestTrackingFlags(t *testing.T) {
	base := []string{"-postgres-url", "postgres://x", "-tls-cert", "c", "-tls-key", "k", "-tls-ca", "ca"}
	s, err := parse(base)
	if err != nil || s.cfg.Tracking.KeyFile != "" || s.cfg.Tracking.IngestAddr != "127.0.0.1:7102" || s.cfg.Tracking.PublicURL != "https://127.0.0.1:8443" {
		t.Fatalf("defaults: %+v %v", s.cfg.Tracking, err)
	}
	s, err = parse(append([]string{"-tracking-key-file", "/k", "-public-url", "https://t.example", "-sendgrid-webhook-public-key-file", "/sg",
		"-twilio-auth-token-file", "/tw", "-ingest-addr", "ingest:7102", "-tracking-previous-key-file", "/old"}, base...))
	// The Twilio auth token is one flag (-twilio-auth-token-file, the sending's): Twilio signs
	// its callbacks with the token messages are sent with.
	want := app.TrackingConfig{KeyFile: "/k", PreviousKeyFile: "/old", PublicURL: "https://t.example", IngestAddr: "ingest:7102",
		SendGridWebhookPublicKeyFile: "/sg"}
	if err != nil || s.cfg.Tracking != want || s.cfg.Sending.TwilioAuthTokenFile != "/tw" {
		t.Errorf("set: %+v %v", s.cfg.Tracking, err)
	}
	for _, bad := range []string{"ftp://t.example", "https://t.example/path", "t.example"} {
		if _, err := parse(append([]string{"-tracking-key-file", "/k", "-public-url", bad}, base...)); err == nil || !strings.Contains(err.Error(), "-public-url") {
			t.Errorf("-public-url %s: %v", bad, err)
		}
	}
}
