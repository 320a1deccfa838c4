// Command auth runs the auth service: tenants, users, login and token signing keys. It parses
// flags into an app.Config; package app builds and runs the service.
package main

import (
	"context"
	"flag"
	"log/slog"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/process"
	"github.com/campaignmesh/campaignmesh/services/auth/app"
)

type settings struct {
	// cfg.KEKs are never logged: only their ids appear in messages.
	cfg      app.Config
	logLevel slog.Level
}

// LogLevel implements process.Settings.
func (s settings) LogLevel() slog.Level { return s.logLevel }

func parse(args []string) (settings, error) {
	s := settings{cfg: app.DefaultConfig()}
	c := &s.cfg
	fs := flag.NewFlagSet("auth", flag.ContinueOnError)
	fs.StringVar(&c.Listen, "listen", c.Listen, "gRPC (mTLS) listen address")
	fs.StringVar(&c.AdminListen, "admin-listen", c.AdminListen, "admin listen address for /metrics and /healthz")
	fs.StringVar(&c.HealthListen, "health-listen", c.HealthListen, "plaintext gRPC health-only listen address for Kubernetes probes (empty: none)")
	c.ConnectionAge.RegisterFlags(fs)
	fs.StringVar(&c.PostgresURL, "postgres-url", "", "PostgreSQL URL of the auth database (required)")
	c.TLS.RegisterFlags(fs, app.ServiceName)
	fs.DurationVar(&c.AccessTokenTTL, "access-token-ttl", c.AccessTokenTTL, "lifetime of access tokens (1m to 1h)")
	fs.DurationVar(&c.RefreshAbsoluteTTL, "refresh-absolute-ttl", c.RefreshAbsoluteTTL, "how long a session lives from its login, however often it is refreshed (1h to 8760h)")
	var kekSpec, kekFile string
	fs.StringVar(&kekSpec, "key-encryption-keys", "", "keys that encrypt the token signing keys at rest: id:base64(32 bytes),… — the first encrypts, all decrypt (required, or -key-encryption-keys-file)")
	fs.StringVar(&kekFile, "key-encryption-keys-file", "", "file holding -key-encryption-keys (e.g. a mounted secret)")
	fs.StringVar(&c.BootstrapDir, "bootstrap-dir", "", "on the very first start, write the operator's and first admin's credentials here (empty: no bootstrap)")
	fs.IntVar(&c.MaxRecvMsgSize, "max-recv-msg-size", c.MaxRecvMsgSize, "largest request message in bytes")
	fs.DurationVar(&c.GracePeriod, "grace-period", c.GracePeriod, "how long a stop waits for calls in flight")
	fs.TextVar(&s.logLevel, "log-level", slog.LevelInfo, "log level (debug, info, warn, error)")
	if err := config.Parse(fs, "CM_AUTH", args); err != nil {
		return s, err
	}
	var p config.Problems
	p.Check(c.PostgresURL != "", "-postgres-url is required")
	p.Check(c.TLS.Complete(), "-tls-cert, -tls-key and -tls-ca are required")
	c.ConnectionAge.Check(&p)
	p.Check(c.AccessTokenTTL >= time.Minute && c.AccessTokenTTL <= time.Hour, "-access-token-ttl must be between 1m and 1h")
	p.Check(c.RefreshAbsoluteTTL >= time.Hour && c.RefreshAbsoluteTTL <= 365*24*time.Hour, "-refresh-absolute-ttl must be between 1h and 8760h")
	keks, err := app.LoadKeyEncryptionKeys(kekSpec, kekFile)
	p.Check(err == nil, "%v", err)
	c.KEKs = keks
	p.Check(c.MaxRecvMsgSize >= 1024 && c.MaxRecvMsgSize <= 64<<20, "-max-recv-msg-size must be between 1 KiB and 64 MiB")
	return s, p.Err()
}

func main() { process.Main("auth", parse, run) }

func run(ctx context.Context, s settings, logger *slog.Logger) error {
	a, err := app.New(ctx, s.cfg, logger)
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Run(ctx)
}
