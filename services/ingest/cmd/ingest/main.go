// Command ingest runs the event intake: validate, enrich, store in JetStream, acknowledge.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"time"

	"golang.org/x/sync/errgroup"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	auditnats "github.com/campaignmesh/campaignmesh/internal/platform/audit/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn/authclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/process"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
	"github.com/campaignmesh/campaignmesh/services/ingest"
	"github.com/campaignmesh/campaignmesh/services/ingest/grpcapi"
)

type settings struct {
	listen, adminListen, authAddr string
	nats                          natsjs.ClientFlags
	tls                           mtls.Files
	limits                        ingest.Limits
	rates                         grpcapi.RateLimits
	stream                        natsjs.StreamConfig
	grace                         time.Duration
	logLevel                      slog.Level
}

// LogLevel implements process.Settings.
func (s settings) LogLevel() slog.Level { return s.logLevel }

func parse(args []string) (settings, error) {
	s := settings{limits: ingest.DefaultLimits, rates: grpcapi.DefaultRateLimits, stream: natsjs.DefaultStream}
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	fs.StringVar(&s.listen, "listen", "127.0.0.1:7102", "gRPC (mTLS) listen address")
	fs.StringVar(&s.adminListen, "admin-listen", "127.0.0.1:9102", "admin listen address for /metrics and /healthz")
	s.nats.RegisterFlags(fs, "ingest")
	fs.StringVar(&s.authAddr, "auth-addr", "127.0.0.1:7101", "address of the auth service (keys and API key verification)")
	s.tls.RegisterFlags(fs, "ingest")
	fs.IntVar(&s.limits.MaxEventBytes, "max-event-bytes", s.limits.MaxEventBytes, "largest event")
	fs.IntVar(&s.limits.MaxBatchBytes, "max-batch-bytes", s.limits.MaxBatchBytes, "largest request")
	fs.IntVar(&s.limits.MaxBatchEvents, "max-batch-events", s.limits.MaxBatchEvents, "most events in a request")
	fs.IntVar(&s.limits.MaxProperties, "max-properties", s.limits.MaxProperties, "most property keys of an event")
	fs.DurationVar(&s.limits.SkewTolerance, "skew-tolerance", s.limits.SkewTolerance, "client clock offsets within this are not corrected")
	fs.DurationVar(&s.limits.MaxFuture, "max-future", s.limits.MaxFuture, "event times further ahead than this are clamped")
	fs.Float64Var(&s.rates.PerTenant, "rate-per-tenant", s.rates.PerTenant, "events per second per tenant")
	fs.Float64Var(&s.rates.PerSource, "rate-per-source", s.rates.PerSource, "events per second per API key or user")
	fs.Int64Var(&s.stream.MaxBytes, "stream-max-bytes", s.stream.MaxBytes, "storage bound of the event stream")
	fs.DurationVar(&s.stream.Duplicates, "stream-duplicate-window", s.stream.Duplicates, "window in which a resent batch is dropped")
	fs.DurationVar(&s.grace, "grace-period", grpcserver.DefaultGracePeriod, "how long a stop waits for calls in flight")
	fs.TextVar(&s.logLevel, "log-level", slog.LevelInfo, "log level (debug, info, warn, error)")
	if err := config.Parse(fs, "CM_INGEST", args); err != nil {
		return s, err
	}
	var p config.Problems
	p.Check(s.tls.Complete(), "-tls-cert, -tls-key and -tls-ca are required")
	s.nats.Check(&p)
	p.Check(s.limits.MaxEventBytes > 0 && s.limits.MaxBatchBytes >= s.limits.MaxEventBytes && s.limits.MaxBatchBytes <= 16<<20, "event and batch byte limits must be positive, the batch at least one event, at most 16 MiB")
	p.Check(s.limits.MaxBatchEvents > 0 && s.limits.MaxBatchEvents <= 10000, "-max-batch-events must be 1 to 10000")
	p.Check(s.rates.PerTenant > 0 && s.rates.PerSource > 0, "rate limits must be positive")
	p.Check(s.stream.MaxBytes >= 1<<20, "-stream-max-bytes must be at least 1 MiB")
	return s, p.Err()
}

func main() { process.Main("ingest", parse, run) }

func run(ctx context.Context, s settings, logger *slog.Logger) error {
	certs, err := mtls.NewSource(s.tls, logger)
	if err != nil {
		return err
	}
	nc, js, err := s.nats.Connect("ingest")
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := natsjs.EnsureStreams(ctx, js, s.stream); err != nil {
		return err
	}
	authConn, err := grpcclient.Dial(s.authAddr, "auth", certs)
	if err != nil {
		return err
	}
	defer authConn.Close()
	authClient := authv1.NewAuthServiceClient(authConn)
	// Audit: refused credentials are records in the audit stream, delivered to auth by auditSink.Run.
	auditSink, err := auditnats.New(ctx, js, "ingest", authClient, logger, auditnats.DefaultConfig)
	if err != nil {
		return err
	}

	reg := telemetry.NewRegistry()
	verifier, revocations := authclient.NewVerifier(authClient)
	srv := grpcserver.New(
		grpcserver.WithService("ingest"),
		grpcserver.WithAuditor(auditSink),
		grpcserver.WithLogger(logger),
		grpcserver.WithTLS(certs.ServerConfig()),
		grpcserver.WithVerifier(verifier),
		grpcserver.WithMetrics(reg),
		grpcserver.WithQuietCalls(grpcapi.HotMethods...),
		grpcserver.WithMaxRecvMsgSize(s.limits.MaxBatchBytes+64<<10),
		grpcserver.WithGracePeriod(s.grace),
	)
	ingestv1.RegisterIngestServiceServer(srv.GRPC(), grpcapi.NewServer(js, s.limits, s.rates, reg))
	lis, err := net.Listen("tcp", s.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.listen, err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(ctx, lis) })
	g.Go(func() error { return revocations.WithLogger(logger).Run(ctx) })
	g.Go(func() error { return auditSink.Run(ctx) })
	g.Go(func() error { return telemetry.ServeAdmin(ctx, s.adminListen, reg, logger) })
	return g.Wait()
}
