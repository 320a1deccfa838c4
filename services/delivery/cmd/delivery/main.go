// Command delivery runs the delivery service: a tenant's contacts with their consent per
// channel, and its segments. It parses flags into an app.Config; package app builds and runs
// the service.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/process"
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
	c.TLS.RegisterFlags(fs, app.ServiceName)
	app.RegisterTrackingFlags(fs, &c.Tracking)
	fs.IntVar(&c.MaxRecvMsgSize, "max-recv-msg-size", c.MaxRecvMsgSize, "largest request message in bytes")
	fs.DurationVar(&c.GracePeriod, "grace-period", c.GracePeriod, "how long a stop waits for calls in flight")
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
	app.CheckTracking(c.Tracking, &p)
	p.Check(c.MaxRecvMsgSize >= 1024 && c.MaxRecvMsgSize <= 64<<20, "-max-recv-msg-size must be between 1 KiB and 64 MiB")
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
