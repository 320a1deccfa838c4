package main

import (
	"strings"
	"testing"
	"time"
)

// The defaults are billing's ports (7107, admin 9107), auth's, analytics' and delivery's
// addresses, NATS user billing, a 15 s metering interval and days final 48 h after their end;
// Stripe's API, 30 s reporting, cm_ event names and a 168 h grace before suspension; the
// database, the certificate and the NATS password are required; bounds are checked.
func TestFlags(t *testing.T) {
	base := []string{"-postgres-url", "postgres://x", "-tls-cert", "c", "-tls-key", "k", "-tls-ca", "ca", "-nats-password-file", "/p"}
	s, err := parse(base)
	c := s.cfg
	if err != nil || c.Listen != "127.0.0.1:7107" || c.AdminListen != "127.0.0.1:9107" || c.AuthAddr != "127.0.0.1:7101" ||
		c.AnalyticsAddr != "127.0.0.1:7104" || c.DeliveryAddr != "127.0.0.1:7106" || c.NATS.User != "billing" ||
		c.Metering.Interval != 15*time.Second || c.Metering.CloseAfter != 48*time.Hour || c.Stripe.URL != "https://api.stripe.com" ||
		c.Stripe.ReportInterval != 30*time.Second || c.Stripe.MeterPrefix != "cm_" || c.AccountGracePeriod != 168*time.Hour || c.Stripe.APIKeyFile != "" {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	if _, err := parse(nil); err == nil || !strings.Contains(err.Error(), "-postgres-url is required") || !strings.Contains(err.Error(), "-nats-password-file") {
		t.Errorf("nothing set: %v", err)
	}
	t.Setenv("CM_BILLING_METER_INTERVAL", "5s")
	s, err = parse(append([]string{"-close-after", "24h"}, base...))
	if err != nil || s.cfg.Metering.Interval != 5*time.Second || s.cfg.Metering.CloseAfter != 24*time.Hour {
		t.Errorf("set: %+v, %v", s.cfg.Metering, err)
	}
	for flag, args := range map[string][]string{
		"-meter-interval":  {"-meter-interval", "1ms"},
		"-close-after":     {"-close-after", "10m"},
		"-payment-grace":   {"-payment-grace", "1m"},
		"-report-interval": {"-report-interval", "10ms"},
	} {
		if _, err := parse(append(args, base...)); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%v: %v, want %s refused", args, err, flag)
		}
	}
}
