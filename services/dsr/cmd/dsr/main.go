// Command dsr runs the dsr service: data-subject requests (access, erasure, suppression) fanned
// out to every participant, the suppression list, per-tenant privacy policies and signed
// receipts. It parses flags into an app.Config; package app builds and runs the service.
package main

import (
	"context"
	"flag"
	"log/slog"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/process"
	"github.com/campaignmesh/campaignmesh/services/dsr/app"
	"github.com/campaignmesh/campaignmesh/services/dsr/participantclient"
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
	participants := "analytics=127.0.0.1:7104,auth=127.0.0.1:7101,delivery=127.0.0.1:7106"
	fs := flag.NewFlagSet("dsr", flag.ContinueOnError)
	fs.StringVar(&c.Listen, "listen", c.Listen, "gRPC (mTLS) listen address")
	fs.StringVar(&c.AdminListen, "admin-listen", c.AdminListen, "admin listen address for /metrics and /healthz")
	fs.StringVar(&c.HealthListen, "health-listen", c.HealthListen, "plaintext gRPC health-only listen address for Kubernetes probes (empty: none)")
	c.ConnectionAge.RegisterFlags(fs)
	fs.StringVar(&c.PostgresURL, "postgres-url", "", "PostgreSQL URL of the dsr database (required)")
	fs.StringVar(&c.AuthAddr, "auth-addr", c.AuthAddr, "address of the auth service (signing keys, API key verification, audit log)")
	c.NATS.RegisterFlags(fs, app.ServiceName)
	fs.StringVar(&c.PrivacyKeyFile, "privacy-key-file", "", "file holding the mesh's privacy key: base64 of 32 random bytes, the same for dsr, ingest and analytics (required)")
	fs.StringVar(&c.KEKFile, "key-encryption-keys-file", "", "file holding the keys that encrypt the receipt signing key at rest: id:base64(32 bytes),… — the first encrypts, all decrypt (required)")
	fs.StringVar(&participants, "participants", participants, "participants as name=host:port,… (the name is also the participant's mesh identity)")
	c.TLS.RegisterFlags(fs, app.ServiceName)
	fs.IntVar(&c.Workers, "workers", c.Workers, "how many requests progress at once")
	fs.DurationVar(&c.PollInterval, "poll-interval", c.PollInterval, "how often an idle runner looks for due requests and polls running erasures")
	fs.DurationVar(&c.Lease, "lease", c.Lease, "how long a request claimed by a runner that died waits before another runner takes it (the same process restarted takes its own back at once)")
	fs.IntVar(&c.MaxRecvMsgSize, "max-recv-msg-size", c.MaxRecvMsgSize, "largest request message in bytes")
	fs.DurationVar(&c.GracePeriod, "grace-period", c.GracePeriod, "how long a stop waits for calls in flight")
	fs.TextVar(&s.logLevel, "log-level", slog.LevelInfo, "log level (debug, info, warn, error)")
	if err := config.Parse(fs, "CM_DSR", args); err != nil {
		return s, err
	}
	var p config.Problems
	specs, err := participantclient.ParseSpecs(participants)
	p.Check(err == nil, "-participants: %v", err)
	c.Participants = specs
	p.Check(c.PostgresURL != "", "-postgres-url is required")
	p.Check(c.PrivacyKeyFile != "", "-privacy-key-file is required")
	p.Check(c.KEKFile != "", "-key-encryption-keys-file is required")
	p.Check(c.TLS.Complete(), "-tls-cert, -tls-key and -tls-ca are required")
	c.ConnectionAge.Check(&p)
	c.NATS.Check(&p)
	p.Check(c.Workers >= 1 && c.Workers <= 1024, "-workers must be between 1 and 1024")
	p.Check(c.PollInterval >= 10*time.Millisecond && c.PollInterval <= time.Minute, "-poll-interval must be between 10ms and 1m")
	p.Check(c.Lease >= time.Second && c.Lease <= time.Hour, "-lease must be between 1s and 1h")
	p.Check(c.MaxRecvMsgSize >= 1024 && c.MaxRecvMsgSize <= 64<<20, "-max-recv-msg-size must be between 1 KiB and 64 MiB")
	return s, p.Err()
}

func main() { process.Main("dsr", parse, run) }

func run(ctx context.Context, s settings, logger *slog.Logger) error {
	a, err := app.New(ctx, s.cfg, logger)
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Run(ctx)
}
