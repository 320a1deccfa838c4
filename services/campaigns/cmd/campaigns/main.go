// Command campaigns runs the campaigns service: campaign definitions and lifecycle, the
// scheduler that starts, ends, stops and resumes them, and budget pacing. It parses flags into
// an app.Config; package app builds and runs the service.
package main

import (
	"context"
	"flag"
	"log/slog"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/process"
	"github.com/campaignmesh/campaignmesh/services/campaigns/app"
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
	fs := flag.NewFlagSet("campaigns", flag.ContinueOnError)
	fs.StringVar(&c.Listen, "listen", c.Listen, "gRPC (mTLS) listen address")
	fs.StringVar(&c.AdminListen, "admin-listen", c.AdminListen, "admin listen address for /metrics and /healthz")
	fs.StringVar(&c.HealthListen, "health-listen", c.HealthListen, "plaintext gRPC health-only listen address for Kubernetes probes (empty: none)")
	c.ConnectionAge.RegisterFlags(fs)
	fs.StringVar(&c.PostgresURL, "postgres-url", "", "PostgreSQL URL of the campaigns database (required)")
	fs.StringVar(&c.AuthAddr, "auth-addr", c.AuthAddr, "address of the auth service (signing keys, API key verification, audit log)")
	fs.StringVar(&c.AnalyticsAddr, "analytics-addr", c.AnalyticsAddr, "address of the analytics service (campaign spend)")
	c.TLS.RegisterFlags(fs, app.ServiceName)
	fs.DurationVar(&c.SchedulerInterval, "scheduler-interval", c.SchedulerInterval, "how often the scheduler looks for campaigns to start, end or resume")
	fs.DurationVar(&c.BudgetInterval, "budget-interval", c.BudgetInterval, "how often the scheduler compares spend with budgets")
	fs.IntVar(&c.MaxRecvMsgSize, "max-recv-msg-size", c.MaxRecvMsgSize, "largest request message in bytes")
	fs.DurationVar(&c.GracePeriod, "grace-period", c.GracePeriod, "how long a stop waits for calls in flight")
	fs.TextVar(&s.logLevel, "log-level", slog.LevelInfo, "log level (debug, info, warn, error)")
	if err := config.Parse(fs, "CM_CAMPAIGNS", args); err != nil {
		return s, err
	}
	var p config.Problems
	p.Check(c.PostgresURL != "", "-postgres-url is required")
	p.Check(c.TLS.Complete(), "-tls-cert, -tls-key and -tls-ca are required")
	c.ConnectionAge.Check(&p)
	p.Check(c.SchedulerInterval >= 10*time.Millisecond && c.SchedulerInterval <= time.Hour, "-scheduler-interval must be between 10ms and 1h")
	p.Check(c.BudgetInterval >= time.Second && c.BudgetInterval <= time.Hour, "-budget-interval must be between 1s and 1h")
	p.Check(c.MaxRecvMsgSize >= 1024 && c.MaxRecvMsgSize <= 64<<20, "-max-recv-msg-size must be between 1 KiB and 64 MiB")
	return s, p.Err()
}

func main() { process.Main("campaigns", parse, run) }

func run(ctx context.Context, s settings, logger *slog.Logger) error {
	a, err := app.New(ctx, s.cfg, logger)
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Run(ctx)
}
