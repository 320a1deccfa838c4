// Command ingest runs the event intake: validate, enrich, store in JetStream, acknowledge. It
// parses flags into an app.Config; package app builds and runs the service.
package main

import (
	"context"
	"flag"
	"log/slog"

	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/process"
	"github.com/campaignmesh/campaignmesh/services/ingest/app"
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
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	fs.StringVar(&c.Listen, "listen", c.Listen, "gRPC (mTLS) listen address")
	fs.StringVar(&c.AdminListen, "admin-listen", c.AdminListen, "admin listen address for /metrics and /healthz")
	fs.StringVar(&c.HealthListen, "health-listen", c.HealthListen, "plaintext gRPC health-only listen address for Kubernetes probes (empty: none)")
	c.ConnectionAge.RegisterFlags(fs)
	c.NATS.RegisterFlags(fs, "ingest")
	fs.StringVar(&c.AuthAddr, "auth-addr", c.AuthAddr, "address of the auth service (keys and API key verification)")
	c.TLS.RegisterFlags(fs, "ingest")
	fs.StringVar(&c.PrivacyKeyFile, "privacy-key-file", "", "file holding the mesh's privacy key (base64 of at least 32 bytes; the same for dsr, ingest and analytics): the key of suppressed subjects' and hashed properties' hashes")
	fs.IntVar(&c.Limits.MaxEventBytes, "max-event-bytes", c.Limits.MaxEventBytes, "largest event")
	fs.IntVar(&c.Limits.MaxBatchBytes, "max-batch-bytes", c.Limits.MaxBatchBytes, "largest request")
	fs.IntVar(&c.Limits.MaxBatchEvents, "max-batch-events", c.Limits.MaxBatchEvents, "most events in a request")
	fs.IntVar(&c.Limits.MaxProperties, "max-properties", c.Limits.MaxProperties, "most property keys of an event")
	fs.DurationVar(&c.Limits.SkewTolerance, "skew-tolerance", c.Limits.SkewTolerance, "client clock offsets within this are not corrected")
	fs.DurationVar(&c.Limits.MaxFuture, "max-future", c.Limits.MaxFuture, "event times further ahead than this are clamped")
	fs.Float64Var(&c.Rates.PerTenant, "rate-per-tenant", c.Rates.PerTenant, "events per second per tenant")
	fs.Float64Var(&c.Rates.PerSource, "rate-per-source", c.Rates.PerSource, "events per second per API key or user")
	fs.IntVar(&c.Tails.PerSecond, "tail-rate", c.Tails.PerSecond, "outcomes per second one live event tail receives (the rest are dropped and counted)")
	fs.DurationVar(&c.Tails.MaxDuration, "tail-max-duration", c.Tails.MaxDuration, "a live event tail ends after this long (the caller reconnects)")
	fs.IntVar(&c.Tails.PerTenant, "tail-per-tenant", c.Tails.PerTenant, "concurrent live event tails per tenant")
	fs.IntVar(&c.Tails.History, "tail-history", c.Tails.History, "recent outcomes of its tenant a live event tail starts with (0: none)")
	fs.DurationVar(&c.Tails.HistoryAge, "tail-history-age", c.Tails.HistoryAge, "a live event tail starts with the outcomes of this last while only")
	fs.IntVar(&c.Tails.HistoryBytes, "tail-history-bytes", c.Tails.HistoryBytes, "bytes of recent requests (wire size) an instance keeps for the tails, across tenants")
	fs.DurationVar(&c.Tails.HistoryWait, "tail-history-wait", c.Tails.HistoryWait, "how long an opening live event tail waits for the other instances' recent outcomes")
	fs.Int64Var(&c.Stream.MaxBytes, "stream-max-bytes", c.Stream.MaxBytes, "storage bound of the event stream, in bytes before compression: the ClickHouse outage it rides out (docs/operations.md)")
	fs.DurationVar(&c.Stream.Duplicates, "stream-duplicate-window", c.Stream.Duplicates, "window in which a resent batch is dropped")
	fs.DurationVar(&c.GracePeriod, "grace-period", c.GracePeriod, "how long a stop waits for calls in flight")
	fs.TextVar(&s.logLevel, "log-level", slog.LevelInfo, "log level (debug, info, warn, error)")
	if err := config.Parse(fs, "CM_INGEST", args); err != nil {
		return s, err
	}
	var p config.Problems
	p.Check(c.TLS.Complete(), "-tls-cert, -tls-key and -tls-ca are required")
	c.ConnectionAge.Check(&p)
	c.NATS.Check(&p)
	p.Check(c.PrivacyKeyFile != "", "-privacy-key-file is required (suppression lists and hashed properties are keyed with it)")
	p.Check(c.Limits.MaxEventBytes > 0 && c.Limits.MaxBatchBytes >= c.Limits.MaxEventBytes && c.Limits.MaxBatchBytes <= 16<<20, "event and batch byte limits must be positive, the batch at least one event, at most 16 MiB")
	p.Check(c.Limits.MaxBatchEvents > 0 && c.Limits.MaxBatchEvents <= 10000, "-max-batch-events must be 1 to 10000")
	p.Check(c.Rates.PerTenant > 0 && c.Rates.PerSource > 0, "rate limits must be positive")
	p.Check(c.Tails.PerSecond > 0 && c.Tails.PerTenant > 0 && c.Tails.MaxDuration > 0, "-tail-rate, -tail-per-tenant and -tail-max-duration must be positive")
	p.Check(c.Tails.History >= 0 && c.Tails.History <= 1000 && c.Tails.HistoryAge > 0 && c.Tails.HistoryBytes >= 0 && c.Tails.HistoryWait > 0,
		"-tail-history must be 0 to 1000, -tail-history-bytes at least 0, -tail-history-age and -tail-history-wait positive")
	p.Check(c.Stream.MaxBytes >= 1<<20, "-stream-max-bytes must be at least 1 MiB")
	return s, p.Err()
}

func main() { process.Main("ingest", parse, run) }

func run(ctx context.Context, s settings, logger *slog.Logger) error {
	a, err := app.New(ctx, s.cfg, logger)
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Run(ctx)
}
