// Command analytics runs the analytics service: the query API over ClickHouse (gRPC over mTLS)
// and the writer that moves accepted events from JetStream into ClickHouse. It parses flags
// into an app.Config; package app builds and runs the service.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/process"
	"github.com/campaignmesh/campaignmesh/services/analytics/app"
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
	fs := flag.NewFlagSet("analytics", flag.ContinueOnError)
	fs.StringVar(&c.Listen, "listen", c.Listen, "gRPC (mTLS) listen address")
	fs.StringVar(&c.AuthAddr, "auth-addr", c.AuthAddr, "address of the auth service (keys and API key verification)")
	c.TLS.RegisterFlags(fs, "analytics")
	fs.IntVar(&c.Limits.ConcurrentPerTenant, "max-concurrent-queries", c.Limits.ConcurrentPerTenant, "queries one tenant may run at once")
	fs.IntVar(&c.Limits.LiveStreamsPerTenant, "max-live-streams", c.Limits.LiveStreamsPerTenant, "live metric streams one tenant may hold open")
	fs.DurationVar(&c.Query.MaxExecutionTime, "query-timeout", c.Query.MaxExecutionTime, "ClickHouse max_execution_time of a query (whole seconds)")
	fs.IntVar(&c.Query.MaxResultRows, "query-max-rows", c.Query.MaxResultRows, "most rows a query may return")
	fs.Int64Var(&c.Query.MaxMemory, "query-max-memory", c.Query.MaxMemory, "most memory (bytes) a query may use in ClickHouse")
	fs.DurationVar(&c.GracePeriod, "grace-period", c.GracePeriod, "how long a stop waits for calls in flight")
	fs.StringVar(&c.AdminListen, "admin-listen", c.AdminListen, "admin listen address for /metrics and /healthz")
	fs.StringVar(&c.HealthListen, "health-listen", c.HealthListen, "plaintext gRPC health-only listen address for Kubernetes probes (empty: none)")
	c.ConnectionAge.RegisterFlags(fs)
	c.NATS.RegisterFlags(fs, "analytics")
	fs.StringVar(&c.ClickHouseAddr, "clickhouse-addr", c.ClickHouseAddr, "ClickHouse native protocol address")
	fs.StringVar(&c.Database, "clickhouse-database", c.Database, "ClickHouse database")
	shards := fs.String("clickhouse-shards", "", "the ClickHouse cluster's shards, native addresses in shard order, comma-separated (shard k holds the stream partitions p with p % shards == k); default: one shard, -clickhouse-addr, which otherwise is the first of them")
	fs.IntVar(&c.WriterIndex, "writer-index", c.WriterIndex, "this process's writer index: it owns the stream partitions p with p % -writer-count == index")
	fs.IntVar(&c.WriterCount, "writer-count", c.WriterCount, "the number of writer processes (1 to the stream's 8 partitions)")
	fs.TextVar(&c.Roles, "roles", c.Roles, "what this process runs, comma-separated: api (the query API), writer (stream to ClickHouse); writer alone listens only on -admin-listen and -health-listen")
	fs.StringVar(&c.WriterUser.Name, "clickhouse-writer-user", c.WriterUser.Name, "ClickHouse user of the writer: schema, inserts, event deletions")
	fs.StringVar(&c.WriterPasswordFile, "clickhouse-writer-password-file", "", "file holding the writer user's password")
	fs.StringVar(&c.ReaderUser.Name, "clickhouse-reader-user", c.ReaderUser.Name, "read-only ClickHouse user of the query API")
	fs.StringVar(&c.ReaderPasswordFile, "clickhouse-reader-password-file", "", "file holding the reader user's password")
	fs.IntVar(&c.Writer.BatchRows, "writer-batch-rows", c.Writer.BatchRows, "rows per ClickHouse insert (at most)")
	fs.DurationVar(&c.Writer.MaxWait, "writer-max-wait", c.Writer.MaxWait, "longest a row waits before it is inserted")
	fs.DurationVar(&c.Writer.DedupWindow, "dedup-window", c.Writer.DedupWindow, "how long after an event is stored a copy of it (same tenant and eventId, in another batch) is still dropped (24h to 720h)")
	fs.IntVar(&c.Writer.DedupCapacity, "dedup-capacity", c.Writer.DedupCapacity, "events per dedup window the writer's in-memory filter is sized for, about 2.5 bytes each; beyond it more events are looked up in ClickHouse")
	fs.StringVar(&c.PrivacyKeyFile, "privacy-key-file", "", "file holding the mesh's privacy key (base64 of 32 bytes, the same as dsr's and ingest's): the writer drops events of suppressed subjects still in the stream; required with the writer role")
	fs.IntVar(&c.RetentionDays, "retention-days", c.RetentionDays, "deployment-wide raw-event retention in days, enforced by dropping whole months entirely older than it (0 keeps events; tenants' own retentions come from their privacy policies)")
	fs.DurationVar(&c.RetentionInterval, "retention-interval", c.RetentionInterval, "how often the api role enforces retention (tenant policies and -retention-days); the first run is a minute after start")
	fs.DurationVar(&c.Erasure.Window, "erasure-window", c.Erasure.Window, "how long subject erasures are gathered after the first arrives, to be deleted together in one ClickHouse mutation per shard")
	fs.DurationVar(&c.Erasure.FenceTimeout, "erasure-fence-timeout", c.Erasure.FenceTimeout, "longest an erasure waits for every writer to pause a tenant's inserts before it tries again later")
	registerFaultFlags(fs, c) // only in the chaos build (main_chaos.go)
	fs.TextVar(&s.logLevel, "log-level", slog.LevelInfo, "log level (debug, info, warn, error)")
	if err := config.Parse(fs, "CM_ANALYTICS", args); err != nil {
		return s, err
	}
	if *shards != "" {
		c.ClickHouseShards = app.ParseShards(*shards)
		if !setByUser(fs, "clickhouse-addr") {
			c.ClickHouseAddr = c.ClickHouseShards[0]
		}
	}
	var p config.Problems
	c.CheckScaleOut(&p)
	p.Check(c.TLS.Complete(), "-tls-cert, -tls-key and -tls-ca are required")
	c.ConnectionAge.Check(&p)
	c.NATS.Check(&p)
	p.Check(c.Limits.ConcurrentPerTenant >= 1 && c.Limits.LiveStreamsPerTenant >= 1, "-max-concurrent-queries and -max-live-streams must be at least 1")
	p.Check(c.Query.MaxExecutionTime >= time.Second && c.Query.MaxResultRows >= 1000 && c.Query.MaxMemory >= 1<<20, "-query-timeout must be at least 1s, -query-max-rows at least 1000, -query-max-memory at least 1 MiB")
	p.Check(c.Writer.BatchRows >= 1 && c.Writer.BatchRows <= 1000000, "-writer-batch-rows must be 1 to 1000000")
	p.Check(c.Writer.MaxWait >= 10*time.Millisecond && c.Writer.MaxWait <= time.Minute, "-writer-max-wait must be 10ms to 1m")
	p.Check(c.Writer.DedupWindow >= 24*time.Hour && c.Writer.DedupWindow <= 30*24*time.Hour, "-dedup-window must be 24h to 720h")
	p.Check(c.Erasure.Window >= 10*time.Millisecond && c.Erasure.Window <= 5*time.Minute, "-erasure-window must be 10ms to 5m")
	p.Check(c.Erasure.FenceTimeout >= time.Second && c.Erasure.FenceTimeout <= natsjs.FenceMaxAge, "-erasure-fence-timeout must be 1s to %s", natsjs.FenceMaxAge)
	p.Check(c.Writer.DedupCapacity >= 1000 && c.Writer.DedupCapacity <= 4_000_000_000, "-dedup-capacity must be 1000 to 4000000000")
	// Without the key the writer could not recognise suppressed subjects: an erased subject's
	// events still in the stream would land after its erasure.
	p.Check(!c.Roles.Writer || c.PrivacyKeyFile != "", "-privacy-key-file is required with the writer role (the same file as dsr's and ingest's)")
	p.Check(c.RetentionDays >= 0 && c.RetentionDays <= 36500, "-retention-days must be 0 (keep) to 36500")
	// A tenant's events must be gone within a day of passing its retention: a run at least
	// every 12 hours leaves room for the mutation itself.
	p.Check(c.RetentionInterval >= time.Minute && c.RetentionInterval <= 12*time.Hour, "-retention-interval must be 1m to 12h")
	return s, p.Err()
}

// setByUser tells whether flag name was given on the command line or in the environment.
func setByUser(fs *flag.FlagSet, name string) bool {
	_, set := os.LookupEnv(config.EnvName("CM_ANALYTICS", name))
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func main() { process.Main("analytics", parse, run) }

func run(ctx context.Context, s settings, logger *slog.Logger) error {
	a, err := app.New(ctx, s.cfg, logger)
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Run(ctx)
}
