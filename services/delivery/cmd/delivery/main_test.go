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
	want := app.TrackingConfig{KeyFile: "/k", PreviousKeyFile: "/old", PublicURL: "https://t.example", IngestAddr: "ingest:7102",
		SendGridWebhookPublicKeyFile: "/sg", TwilioAuthTokenFile: "/tw"}
	if err != nil || s.cfg.Tracking != want {
		t.Errorf("set: %+v %v", s.cfg.Tracking, err)
	}
	for _, bad := range []string{"ftp://t.example", "https://t.example/path", "t.example"} {
		if _, err := parse(append([]string{"-tracking-key-file", "/k", "-public-url", bad}, base...)); err == nil || !strings.Contains(err.Error(), "-public-url") {
			t.Errorf("-public-url %s: %v", bad, err)
		}
	}
}
