// Command analytics runs the analytics service: the query API over ClickHouse (gRPC over mTLS)
// and the writer that moves accepted events from JetStream into ClickHouse.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	auditnats "github.com/campaignmesh/campaignmesh/internal/platform/audit/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn/authclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/process"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/grpcapi"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

type settings struct {
	listen, adminListen, clickhouseAddr, database, authAddr string
	nats                                                    natsjs.ClientFlags
	chWriter, chReader                                      chUserFlags
	tls                                                     mtls.Files
	writer                                                  writer.Config
	limits                                                  analytics.Limits
	query                                                   clickhouse.QueryLimits
	grace                                                   time.Duration
	faultExitAfterInserts                                   int
	logLevel                                                slog.Level
}

// LogLevel implements process.Settings.
func (s settings) LogLevel() slog.Level { return s.logLevel }

func parse(args []string) (settings, error) {
	s := settings{writer: writer.DefaultConfig, limits: analytics.DefaultLimits, query: clickhouse.DefaultQueryLimits}
	fs := flag.NewFlagSet("analytics", flag.ContinueOnError)
	fs.StringVar(&s.listen, "listen", "127.0.0.1:7104", "gRPC (mTLS) listen address")
	fs.StringVar(&s.authAddr, "auth-addr", "127.0.0.1:7101", "address of the auth service (keys and API key verification)")
	s.tls.RegisterFlags(fs, "analytics")
	fs.IntVar(&s.limits.ConcurrentPerTenant, "max-concurrent-queries", s.limits.ConcurrentPerTenant, "queries one tenant may run at once")
	fs.IntVar(&s.limits.LiveStreamsPerTenant, "max-live-streams", s.limits.LiveStreamsPerTenant, "live metric streams one tenant may hold open")
	fs.DurationVar(&s.query.MaxExecutionTime, "query-timeout", s.query.MaxExecutionTime, "ClickHouse max_execution_time of a query (whole seconds)")
	fs.IntVar(&s.query.MaxResultRows, "query-max-rows", s.query.MaxResultRows, "most rows a query may return")
	fs.Int64Var(&s.query.MaxMemory, "query-max-memory", s.query.MaxMemory, "most memory (bytes) a query may use in ClickHouse")
	fs.DurationVar(&s.grace, "grace-period", grpcserver.DefaultGracePeriod, "how long a stop waits for calls in flight")
	fs.StringVar(&s.adminListen, "admin-listen", "127.0.0.1:9104", "admin listen address for /metrics and /healthz")
	s.nats.RegisterFlags(fs, "analytics")
	fs.StringVar(&s.clickhouseAddr, "clickhouse-addr", "127.0.0.1:19000", "ClickHouse native protocol address")
	fs.StringVar(&s.database, "clickhouse-database", "analytics", "ClickHouse database")
	fs.StringVar(&s.chWriter.user, "clickhouse-writer-user", "analytics_writer", "ClickHouse user of the writer: schema, inserts, event deletions")
	fs.StringVar(&s.chWriter.passwordFile, "clickhouse-writer-password-file", "", "file holding the writer user's password")
	fs.StringVar(&s.chReader.user, "clickhouse-reader-user", "analytics_reader", "read-only ClickHouse user of the query API")
	fs.StringVar(&s.chReader.passwordFile, "clickhouse-reader-password-file", "", "file holding the reader user's password")
	fs.IntVar(&s.writer.BatchRows, "writer-batch-rows", s.writer.BatchRows, "rows per ClickHouse insert (at most)")
	fs.DurationVar(&s.writer.MaxWait, "writer-max-wait", s.writer.MaxWait, "longest a row waits before it is inserted")
	fs.IntVar(&s.faultExitAfterInserts, "fault-exit-after-inserts", 0, "fault injection for tests: exit right after this many inserts, before acknowledging (0: off)")
	fs.TextVar(&s.logLevel, "log-level", slog.LevelInfo, "log level (debug, info, warn, error)")
	if err := config.Parse(fs, "CM_ANALYTICS", args); err != nil {
		return s, err
	}
	var p config.Problems
	p.Check(s.tls.Complete(), "-tls-cert, -tls-key and -tls-ca are required")
	s.nats.Check(&p)
	p.Check(s.limits.ConcurrentPerTenant >= 1 && s.limits.LiveStreamsPerTenant >= 1, "-max-concurrent-queries and -max-live-streams must be at least 1")
	p.Check(s.query.MaxExecutionTime >= time.Second && s.query.MaxResultRows >= 1000 && s.query.MaxMemory >= 1<<20, "-query-timeout must be at least 1s, -query-max-rows at least 1000, -query-max-memory at least 1 MiB")
	p.Check(s.writer.BatchRows >= 1 && s.writer.BatchRows <= 1000000, "-writer-batch-rows must be 1 to 1000000")
	p.Check(s.writer.MaxWait >= 10*time.Millisecond && s.writer.MaxWait <= time.Minute, "-writer-max-wait must be 10ms to 1m")
	return s, p.Err()
}

// chUserFlags name a ClickHouse user and the file holding its password.
type chUserFlags struct{ user, passwordFile string }

// load reads the password; no file means no password (a server without role users).
func (f chUserFlags) load() (clickhouse.User, error) {
	u := clickhouse.User{Name: f.user}
	if f.passwordFile == "" {
		return u, nil
	}
	pw, err := config.ReadSecret(f.passwordFile)
	if err != nil {
		return u, fmt.Errorf("clickhouse user %s: %w", f.user, err)
	}
	u.Password = pw
	return u, nil
}

func main() { process.Main("analytics", parse, run) }

func run(ctx context.Context, s settings, logger *slog.Logger) error {
	certs, err := mtls.NewSource(s.tls, logger)
	if err != nil {
		return err
	}
	nc, js, err := s.nats.Connect("analytics-writer")
	if err != nil {
		return err
	}
	defer nc.Close()
	writerUser, err := s.chWriter.load()
	if err != nil {
		return err
	}
	readerUser, err := s.chReader.load()
	if err != nil {
		return err
	}
	conn, err := clickhouse.Open(ctx, s.clickhouseAddr, s.database, writerUser)
	if err != nil {
		return err
	}
	defer conn.Close()
	reader, err := clickhouse.OpenReader(ctx, s.clickhouseAddr, s.database, readerUser)
	if err != nil {
		return err
	}
	defer reader.Close()
	authConn, err := grpcclient.Dial(s.authAddr, "auth", certs)
	if err != nil {
		return err
	}
	defer authConn.Close()
	authClient := authv1.NewAuthServiceClient(authConn)
	// Audit: refused credentials are records in the audit stream, delivered to auth by auditSink.Run.
	auditSink, err := auditnats.New(ctx, js, "analytics", authClient, logger, auditnats.DefaultConfig)
	if err != nil {
		return err
	}

	reg := telemetry.NewRegistry()
	w := writer.New(js, conn, s.writer, logger, reg)
	if s.faultExitAfterInserts > 0 {
		w.CrashAfterInserts(s.faultExitAfterInserts, func() {
			logger.Warn("fault injection: exiting between insert and ack")
			os.Exit(3)
		})
	}
	verifier, revocations := authclient.NewVerifier(authClient)
	srv := grpcserver.New(
		grpcserver.WithService("analytics"),
		grpcserver.WithAuditor(auditSink),
		grpcserver.WithLogger(logger),
		grpcserver.WithTLS(certs.ServerConfig()),
		grpcserver.WithVerifier(verifier),
		grpcserver.WithMetrics(reg),
		grpcserver.WithGracePeriod(s.grace),
	)
	svc := analytics.NewService(clickhouse.NewQueries(reader, conn, s.query), s.limits)
	analyticsv1.RegisterAnalyticsServiceServer(srv.GRPC(), grpcapi.NewServer(svc))
	lis, err := net.Listen("tcp", s.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.listen, err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(ctx) })
	g.Go(func() error { return srv.Serve(ctx, lis) })
	g.Go(func() error { return revocations.WithLogger(logger).Run(ctx) })
	g.Go(func() error { return auditSink.Run(ctx) })
	g.Go(func() error { return telemetry.ServeAdmin(ctx, s.adminListen, reg, logger) })
	return g.Wait()
}
