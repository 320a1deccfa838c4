// Command billing runs the billing service: every tenant's usage per day and meter, counted
// once from the sources of truth (the USAGE stream, analytics and delivery), the plans and the
// quotas it publishes for ingest and delivery to enforce, and the Stripe side (meter events,
// accounts and webhooks, reconciliation, the grace period before suspension). It parses flags
// into an app.Config; package app builds and runs the service.
package main

import (
	"context"
	"flag"
	"log/slog"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/process"
	"github.com/campaignmesh/campaignmesh/services/billing/app"
)

type settings struct {
	cfg      app.Config
	logLevel slog.Level
}

// LogLevel implements process.Settings.
func (s settings) LogLevel() slog.Level { return s.logLevel }

func parse(args []string) (settings, error) {
	s := settings{cfg: app.DefaultConfig()}
	c := &s.cfg
	fs := flag.NewFlagSet("billing", flag.ContinueOnError)
	fs.StringVar(&c.Listen, "listen", c.Listen, "gRPC (mTLS) listen address")
	fs.StringVar(&c.AdminListen, "admin-listen", c.AdminListen, "admin listen address for /metrics and /healthz")
	fs.StringVar(&c.HealthListen, "health-listen", c.HealthListen, "plaintext gRPC health-only listen address for Kubernetes probes (empty: none)")
	c.ConnectionAge.RegisterFlags(fs)
	fs.StringVar(&c.PostgresURL, "postgres-url", "", "PostgreSQL URL of the billing database (required)")
	fs.StringVar(&c.AuthAddr, "auth-addr", c.AuthAddr, "address of the auth service (signing keys, API key verification, audit log)")
	fs.StringVar(&c.AnalyticsAddr, "analytics-addr", c.AnalyticsAddr, "address of the analytics service (events stored, storage bytes)")
	fs.StringVar(&c.DeliveryAddr, "delivery-addr", c.DeliveryAddr, "address of the delivery service (messages sent, contacts stored)")
	c.TLS.RegisterFlags(fs, app.ServiceName)
	c.NATS.RegisterFlags(fs, app.ServiceName)
	fs.DurationVar(&c.Metering.Interval, "meter-interval", c.Metering.Interval, "how often usage is recomputed and quotas published")
	fs.DurationVar(&c.Metering.CloseAfter, "close-after", c.Metering.CloseAfter, "how long after its end a day's usage becomes final")
	fs.IntVar(&c.MaxRecvMsgSize, "max-recv-msg-size", c.MaxRecvMsgSize, "largest request message in bytes")
	fs.StringVar(&c.Stripe.URL, "stripe-url", c.Stripe.URL, "Stripe's API origin (or a stand-in's)")
	fs.StringVar(&c.Stripe.APIKeyFile, "stripe-api-key-file", "", "file holding the Stripe secret key (empty: usage is not reported to Stripe)")
	fs.StringVar(&c.Stripe.WebhookSecretFile, "stripe-webhook-secret-file", "", "file holding the Stripe webhook endpoint's signing secret (empty: every webhook is refused)")
	fs.DurationVar(&c.Stripe.ReportInterval, "report-interval", c.Stripe.ReportInterval, "time between two rounds of meter-event reporting to Stripe")
	fs.StringVar(&c.Stripe.MeterPrefix, "stripe-meter-prefix", c.Stripe.MeterPrefix, "prefix of the Stripe meter event names (cm_events_accepted)")
	fs.DurationVar(&c.AccountGracePeriod, "payment-grace", c.AccountGracePeriod, "how long an account stays flagged (payment failed, subscription lapsed) before its tenant is suspended")
	fs.DurationVar(&c.GracePeriod, "grace-period", c.GracePeriod, "how long a stop waits for calls in flight")
	fs.TextVar(&s.logLevel, "log-level", slog.LevelInfo, "log level (debug, info, warn, error)")
	if err := config.Parse(fs, "CM_BILLING", args); err != nil {
		return s, err
	}
	var p config.Problems
	p.Check(c.PostgresURL != "", "-postgres-url is required")
	p.Check(c.TLS.Complete(), "-tls-cert, -tls-key and -tls-ca are required")
	p.Check(c.NATS.URL != "", "-nats-url is required")
	c.NATS.Check(&p)
	c.ConnectionAge.Check(&p)
	p.Check(c.Metering.Interval >= 100*time.Millisecond && c.Metering.Interval <= time.Hour, "-meter-interval must be between 100ms and 1h")
	p.Check(c.Metering.CloseAfter >= time.Hour && c.Metering.CloseAfter <= 30*24*time.Hour, "-close-after must be between 1h and 720h")
	p.Check(c.Stripe.ReportInterval >= time.Second && c.Stripe.ReportInterval <= time.Hour, "-report-interval must be between 1s and 1h")
	p.Check(c.AccountGracePeriod >= time.Hour, "-payment-grace must be at least 1h")
	p.Check(c.Stripe.MeterPrefix != "" && len(c.Stripe.MeterPrefix) <= 20, "-stripe-meter-prefix must be 1 to 20 characters")
	p.Check(c.MaxRecvMsgSize >= 1024 && c.MaxRecvMsgSize <= 64<<20, "-max-recv-msg-size must be between 1 KiB and 64 MiB")
	return s, p.Err()
}

func main() { process.Main("billing", parse, run) }

func run(ctx context.Context, s settings, logger *slog.Logger) error {
	a, err := app.New(ctx, s.cfg, logger)
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Run(ctx)
}
