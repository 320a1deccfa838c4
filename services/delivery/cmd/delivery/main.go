// Command delivery runs the delivery service: a tenant's contacts with their consent per
// channel, and its segments. It parses flags into an app.Config; package app builds and runs
// the service.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/process"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/app"
)

type settings struct {
	cfg      app.Config
	logLevel slog.Level
	// inboundTenant, when set, makes the command print that tenant's inbound SMS webhook URL
	// and exit (-print-inbound-sms-url).
	inboundTenant string
}

// LogLevel implements process.Settings.
func (s settings) LogLevel() slog.Level { return s.logLevel }

func parse(args []string) (settings, error) {
	s := settings{cfg: app.DefaultConfig()}
	c := &s.cfg
	fs := flag.NewFlagSet("delivery", flag.ContinueOnError)
	fs.StringVar(&c.Listen, "listen", c.Listen, "gRPC (mTLS) listen address")
	fs.StringVar(&c.AdminListen, "admin-listen", c.AdminListen, "admin listen address for /metrics and /healthz")
	fs.StringVar(&c.HealthListen, "health-listen", c.HealthListen, "plaintext gRPC health-only listen address for Kubernetes probes (empty: none)")
	c.ConnectionAge.RegisterFlags(fs)
	fs.StringVar(&c.PostgresURL, "postgres-url", "", "PostgreSQL URL of the delivery database (required)")
	fs.StringVar(&c.AuthAddr, "auth-addr", c.AuthAddr, "address of the auth service (signing keys, API key verification, audit log)")
	fs.StringVar(&c.AnalyticsAddr, "analytics-addr", c.AnalyticsAddr, "address of the analytics service (segments' behaviour conditions; empty: none)")
	c.NATS.RegisterFlags(fs, app.ServiceName)
	// NATS is optional here (the suppression list): no server unless -nats-url names one.
	if f := fs.Lookup("nats-url"); f != nil {
		f.DefValue = ""
		_ = f.Value.Set("")
	}
	fs.StringVar(&c.PrivacyKeyFile, "privacy-key-file", "", "file holding the mesh's privacy key, as dsr's and ingest's (required with -nats-url)")
	fs.DurationVar(&c.PrivacyLoadTimeout, "privacy-load-timeout", c.PrivacyLoadTimeout, "how long the start waits for the suppression list")
	c.TLS.RegisterFlags(fs, app.ServiceName)
	app.RegisterTrackingFlags(fs, &c.Tracking)
	fs.IntVar(&c.MaxRecvMsgSize, "max-recv-msg-size", c.MaxRecvMsgSize, "largest request message in bytes")
	fs.DurationVar(&c.GracePeriod, "grace-period", c.GracePeriod, "how long a stop waits for calls in flight")
	sc := &c.Sending
	fs.StringVar(&sc.CampaignsAddr, "campaigns-addr", sc.CampaignsAddr, "address of the campaigns service (active email and SMS campaigns)")
	fs.StringVar(&sc.SendGridURL, "sendgrid-url", sc.SendGridURL, "SendGrid API origin (or a stand-in's)")
	fs.StringVar(&sc.SendGridAPIKeyFile, "sendgrid-api-key-file", "", "file holding the SendGrid API key (empty: email campaigns are not sent)")
	fs.StringVar(&sc.SendGridFrom, "sendgrid-from", "", "from address of an email whose campaign content names no sender identity (optional)")
	fs.StringVar(&sc.TwilioURL, "twilio-url", sc.TwilioURL, "Twilio API origin (or a stand-in's)")
	fs.StringVar(&sc.TwilioAccountSID, "twilio-account-sid", "", "Twilio account SID (empty: SMS campaigns are not sent)")
	fs.StringVar(&sc.TwilioAuthTokenFile, "twilio-auth-token-file", "", "file holding the Twilio auth token")
	fs.StringVar(&sc.TwilioMessagingServiceSID, "twilio-messaging-service-sid", "", "Twilio messaging service SID campaign SMS are sent from")
	fs.Float64Var(&sc.SendRate, "send-rate", sc.SendRate, "messages per second per tenant and channel (0: no limit)")
	fs.IntVar(&sc.SendConcurrency, "send-concurrency", sc.SendConcurrency, "provider calls in flight per tenant and channel")
	fs.DurationVar(&sc.Lease, "send-lease", sc.Lease, "how long a recipient claimed for a send is its sender's: after a crash its row is reconciled that long after the claim")
	fs.DurationVar(&sc.Settle, "send-settle", sc.Settle, "how long after an attempt a provider's \"no such message\" is believed (at least -send-lease; longer than the provider's indexing delay)")
	fs.DurationVar(&sc.DriveLease, "drive-lease", sc.DriveLease, "how long a campaign stays a crashed replica's before another replica drives it")
	fs.Func("frequency-cap", `at most N messages per contact and channel within a window, across campaigns, as "N/window" (e.g. "3/24h"; empty: none)`, func(v string) error {
		fc, err := delivery.ParseFrequencyCap(v)
		sc.FrequencyCap = fc
		return err
	})
	fs.Int64Var(&c.ImportMaxBytes, "import-max-bytes", delivery.DefaultImportLimits.MaxBytes, "largest contacts import (CSV file) in bytes")
	fs.IntVar(&c.ImportMaxRows, "import-max-rows", delivery.DefaultImportLimits.MaxRows, "most rows of one contacts import")
	fs.TextVar(&s.logLevel, "log-level", slog.LevelInfo, "log level (debug, info, warn, error)")
	fs.StringVar(&s.inboundTenant, "print-inbound-sms-url", "", "print the Twilio incoming-message webhook URL of this tenant (needs -tracking-key-file, -public-url) and exit")
	if err := config.Parse(fs, "CM_DELIVERY", args); err != nil {
		return s, err
	}
	if s.inboundTenant != "" {
		return s, nil
	}
	var p config.Problems
	p.Check(c.PostgresURL != "", "-postgres-url is required")
	p.Check(c.TLS.Complete(), "-tls-cert, -tls-key and -tls-ca are required")
	c.ConnectionAge.Check(&p)
	if c.NATS.URL != "" {
		c.NATS.Check(&p)
		p.Check(c.PrivacyKeyFile != "", "-privacy-key-file is required with -nats-url")
	}
	p.Check(c.ImportMaxBytes >= 1<<10 && c.ImportMaxRows >= 1, "-import-max-bytes must be at least 1 KiB and -import-max-rows at least 1")
	app.CheckTracking(c.Tracking, &p)
	p.Check(c.MaxRecvMsgSize >= 1024 && c.MaxRecvMsgSize <= 64<<20, "-max-recv-msg-size must be between 1 KiB and 64 MiB")
	p.Check(sc.SendRate >= 0, "-send-rate must not be negative")
	p.Check(sc.SendConcurrency >= 1 && sc.SendConcurrency <= 1000, "-send-concurrency must be between 1 and 1000")
	p.Check(sc.Lease >= 15*time.Second, "-send-lease must be at least 15s (a provider call takes up to 10s)")
	p.Check(sc.Settle >= sc.Lease, "-send-settle must be at least -send-lease")
	p.Check(sc.DriveLease >= 3*time.Second, "-drive-lease must be at least 3s")
	return s, p.Err()
}

func main() { process.Main("delivery", parse, run) }

func run(ctx context.Context, s settings, logger *slog.Logger) error {
	if s.inboundTenant != "" {
		u, err := app.InboundSMSURL(s.cfg.Tracking, s.inboundTenant)
		if err == nil {
			_, err = fmt.Println(u)
		}
		return err
	}
	a, err := app.New(ctx, s.cfg, logger)
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Run(ctx)
}
