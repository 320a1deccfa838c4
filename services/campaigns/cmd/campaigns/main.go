// Command campaigns runs the campaigns service: campaign definitions and lifecycle, the
// scheduler that starts, ends, stops and resumes them, and budget pacing.
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
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn/authclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/process"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
	"github.com/campaignmesh/campaignmesh/services/campaigns/analyticsclient"
	"github.com/campaignmesh/campaignmesh/services/campaigns/grpcapi"
	"github.com/campaignmesh/campaignmesh/services/campaigns/postgres"
)

type settings struct {
	listen, adminListen, postgresURL string
	authAddr, analyticsAddr          string
	tls                              mtls.Files
	schedulerInterval                time.Duration
	budgetInterval                   time.Duration
	grace                            time.Duration
	maxRecvMsgSize                   int
	logLevel                         slog.Level
}

// LogLevel implements process.Settings.
func (s settings) LogLevel() slog.Level { return s.logLevel }

func parse(args []string) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("campaigns", flag.ContinueOnError)
	fs.StringVar(&s.listen, "listen", "127.0.0.1:7103", "gRPC (mTLS) listen address")
	fs.StringVar(&s.adminListen, "admin-listen", "127.0.0.1:9103", "admin listen address for /metrics and /healthz")
	fs.StringVar(&s.postgresURL, "postgres-url", "", "PostgreSQL URL of the campaigns database (required)")
	fs.StringVar(&s.authAddr, "auth-addr", "127.0.0.1:7101", "address of the auth service (signing keys, API key verification, audit log)")
	fs.StringVar(&s.analyticsAddr, "analytics-addr", "127.0.0.1:7104", "address of the analytics service (campaign spend)")
	s.tls.RegisterFlags(fs, "campaigns")
	fs.DurationVar(&s.schedulerInterval, "scheduler-interval", campaigns.DefaultSchedulerInterval, "how often the scheduler looks for campaigns to start, end or resume")
	fs.DurationVar(&s.budgetInterval, "budget-interval", campaigns.DefaultBudgetInterval, "how often the scheduler compares spend with budgets")
	fs.IntVar(&s.maxRecvMsgSize, "max-recv-msg-size", 1<<20, "largest request message in bytes")
	fs.DurationVar(&s.grace, "grace-period", grpcserver.DefaultGracePeriod, "how long a stop waits for calls in flight")
	fs.TextVar(&s.logLevel, "log-level", slog.LevelInfo, "log level (debug, info, warn, error)")
	if err := config.Parse(fs, "CM_CAMPAIGNS", args); err != nil {
		return s, err
	}
	var p config.Problems
	p.Check(s.postgresURL != "", "-postgres-url is required")
	p.Check(s.tls.Complete(), "-tls-cert, -tls-key and -tls-ca are required")
	p.Check(s.schedulerInterval >= 10*time.Millisecond && s.schedulerInterval <= time.Hour, "-scheduler-interval must be between 10ms and 1h")
	p.Check(s.budgetInterval >= time.Second && s.budgetInterval <= time.Hour, "-budget-interval must be between 1s and 1h")
	p.Check(s.maxRecvMsgSize >= 1024 && s.maxRecvMsgSize <= 64<<20, "-max-recv-msg-size must be between 1 KiB and 64 MiB")
	return s, p.Err()
}

func main() { process.Main("campaigns", parse, run) }

func run(ctx context.Context, s settings, logger *slog.Logger) error {
	certs, err := mtls.NewSource(s.tls, logger)
	if err != nil {
		return err
	}
	store, err := postgres.Open(ctx, s.postgresURL)
	if err != nil {
		return err
	}
	defer store.Close()
	authConn, err := grpcclient.Dial(s.authAddr, "auth", certs)
	if err != nil {
		return err
	}
	defer authConn.Close()
	authClient := authv1.NewAuthServiceClient(authConn)
	outbox, err := auditpg.NewOutbox(ctx, store.Pool(), authClient, logger)
	if err != nil {
		return err
	}
	spend, analyticsConn, err := analyticsclient.Dial(s.analyticsAddr, certs)
	if err != nil {
		return err
	}
	defer analyticsConn.Close()

	svc := campaigns.NewService(store, spend).WithLogger(logger)
	scheduler := campaigns.NewScheduler(store, spend, outbox, logger,
		campaigns.WithInterval(s.schedulerInterval), campaigns.WithBudgetInterval(s.budgetInterval))
	verifier, revocations := authclient.NewVerifier(authClient)
	opts, err := grpcapi.ServerOptions(ctx, store.Pool(), verifier, outbox, logger)
	if err != nil {
		return err
	}
	reg := telemetry.NewRegistry()
	srv := grpcserver.New(append(opts,
		grpcserver.WithTLS(certs.ServerConfig()),
		grpcserver.WithMetrics(reg),
		grpcserver.WithMaxRecvMsgSize(s.maxRecvMsgSize),
		grpcserver.WithGracePeriod(s.grace),
	)...)
	campaignsv1.RegisterCampaignServiceServer(srv.GRPC(), grpcapi.NewServer(svc))
	lis, err := net.Listen("tcp", s.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.listen, err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(ctx, lis) })
	g.Go(func() error { return revocations.WithLogger(logger).Run(ctx) })
	g.Go(func() error { return telemetry.ServeAdmin(ctx, s.adminListen, reg, logger) })
	g.Go(func() error { return outbox.Run(ctx) })
	g.Go(func() error { return scheduler.Run(ctx) })
	return g.Wait()
}
