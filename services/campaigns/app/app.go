// Package app builds the runnable campaigns service from a Config: the PostgreSQL store
// (migrated on open), the audit outbox and its delivery to auth, the clients of auth
// (credentials, revocations) and analytics (spend), the scheduler, the gRPC API over mTLS
// through the platform's server, and the admin listener (/metrics with the request series and
// the scheduler's, /healthz). cmd/campaigns and the test fixtures
// (internal/servicetest.StartCampaigns) build the service here, so they run the same wiring.
package app

import (
	"context"
	"log/slog"
	"time"

	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn/authclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/lifecycle"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
	"github.com/campaignmesh/campaignmesh/services/campaigns/analyticsclient"
	"github.com/campaignmesh/campaignmesh/services/campaigns/grpcapi"
	"github.com/campaignmesh/campaignmesh/services/campaigns/postgres"
	campaignsprom "github.com/campaignmesh/campaignmesh/services/campaigns/prometheus"
)

// ServiceName is the campaigns service's mesh identity and its name in audit records.
const ServiceName = grpcapi.ServiceName

// Config is everything the campaigns service is built from. DefaultConfig holds the documented
// defaults (the flags of cmd/campaigns).
type Config struct {
	// Listen is the gRPC (mTLS) address, AdminListen the one of /metrics and /healthz; port 0
	// picks a free port (Addr and AdminAddr tell which).
	Listen, AdminListen string
	// HealthListen is the plaintext gRPC health-only address Kubernetes probes call (empty:
	// none); ConnectionAge how long a client connection lives before the server asks the
	// client to reconnect, so clients spread over the replicas behind a Service.
	HealthListen  string
	ConnectionAge grpcserver.ConnectionAge
	// PostgresURL is the campaigns database; New applies its migrations.
	PostgresURL string
	// AuthAddr is the auth service: signing keys, API key verification, revocations and the
	// audit log the outbox delivers to. AnalyticsAddr is the analytics service: campaign spend.
	AuthAddr, AnalyticsAddr string
	// TLS names the service's mesh certificate, key and CA bundle.
	TLS mtls.Files
	// SchedulerInterval is how often the scheduler looks for due campaigns, BudgetInterval how
	// often it compares spend with budgets.
	SchedulerInterval, BudgetInterval time.Duration
	// MaxRecvMsgSize bounds a request message, in bytes.
	MaxRecvMsgSize int
	// GracePeriod bounds how long a stop waits for calls in flight.
	GracePeriod time.Duration

	// Verifier, when set, checks callers' credentials instead of the auth service (tests that
	// sign their own tokens); auth is then dialed only to deliver audit records.
	Verifier grpcserver.Verifier
	// Spend, when set, is the campaigns' spend instead of the analytics service (tests);
	// AnalyticsAddr is then not dialed.
	Spend campaigns.SpendSource
}

// DefaultConfig returns the documented defaults. The database and TLS files have none: they
// are required.
func DefaultConfig() Config {
	return Config{
		Listen: "127.0.0.1:7103", AdminListen: "127.0.0.1:9103",
		AuthAddr: "127.0.0.1:7101", AnalyticsAddr: "127.0.0.1:7104",
		SchedulerInterval: campaigns.DefaultSchedulerInterval, BudgetInterval: campaigns.DefaultBudgetInterval,
		MaxRecvMsgSize: 1 << 20, GracePeriod: grpcserver.DefaultGracePeriod, ConnectionAge: grpcserver.DefaultConnectionAge,
	}
}

// App is a built campaigns service: migrated, connected, listening, not yet serving.
type App struct {
	*lifecycle.Base
	store       *postgres.Store
	outbox      *auditpg.Outbox
	revocations *authn.RevocationList // nil with Config.Verifier
	svc         *campaigns.Service
	scheduler   *campaigns.Scheduler
	server      *grpcserver.Server
}

// New opens the database (applying its migrations and creating the audit outbox), dials auth
// and analytics (connections are made on first use), builds the domain, the scheduler and the
// gRPC server, registers the scheduler's series next to the server's request series, and opens
// both listeners. On an error everything opened so far is released.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (_ *App, err error) {
	a := &App{Base: lifecycle.New(logger)}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	certs, err := mtls.NewSource(cfg.TLS, logger)
	if err != nil {
		return nil, err
	}
	if a.store, err = postgres.Open(ctx, cfg.PostgresURL); err != nil {
		return nil, err
	}
	a.OnClose(a.store.Close)
	auth, err := authclient.Dial(cfg.AuthAddr, certs, logger)
	if err != nil {
		return nil, err
	}
	a.OnClose(auth.Close)
	if a.outbox, err = auditpg.NewOutbox(ctx, a.store.Pool(), auth.Client, logger); err != nil {
		return nil, err
	}
	spend := cfg.Spend
	if spend == nil {
		client, conn, err := analyticsclient.Dial(cfg.AnalyticsAddr, certs)
		if err != nil {
			return nil, err
		}
		a.OnClose(func() { _ = conn.Close() })
		spend = client
	}
	verifier := cfg.Verifier
	if verifier == nil {
		verifier, a.revocations = auth.Verifier, auth.Revocations
	}

	a.svc = campaigns.NewService(a.store, spend).WithLogger(logger)
	a.scheduler = campaigns.NewScheduler(a.store, spend, a.outbox, logger,
		campaigns.WithInterval(cfg.SchedulerInterval), campaigns.WithBudgetInterval(cfg.BudgetInterval),
		campaigns.WithMetrics(campaignsprom.New(a.Registry())))
	opts, err := grpcapi.ServerOptions(ctx, a.store.Pool(), verifier, a.outbox, logger)
	if err != nil {
		return nil, err
	}
	a.server = grpcserver.New(append(opts,
		grpcserver.WithTLS(certs.ServerConfig()),
		grpcserver.WithMetrics(a.Registry()),
		grpcserver.WithMaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpcserver.WithGracePeriod(cfg.GracePeriod),
		cfg.ConnectionAge.Option(),
	)...)
	campaignsv1.RegisterCampaignServiceServer(a.server.GRPC(), grpcapi.NewServer(a.svc))

	if err := a.Listen(cfg.Listen, cfg.AdminListen); err != nil {
		return nil, err
	}
	if err := a.ListenHealth(cfg.HealthListen); err != nil {
		return nil, err
	}
	return a, nil
}

// Service is the domain service the API serves: for tests and tools that seed or inspect it
// directly, bypassing the API's access rules.
func (a *App) Service() *campaigns.Service { return a.svc }

// Store is the service's PostgreSQL store (its Pool lets tests inspect rows).
func (a *App) Store() *postgres.Store { return a.store }

// Outbox is the service's audit outbox (tests count the records not yet delivered).
func (a *App) Outbox() *auditpg.Outbox { return a.outbox }

// Run serves the API and the admin listener, delivers audit records, keeps the revocation list
// current and runs the scheduler until ctx ends (then stops gracefully and returns nil) or one
// of them fails: then the others are stopped and its error is returned. Call it once; Close
// afterwards.
func (a *App) Run(ctx context.Context) error {
	tasks := []func(context.Context) error{a.outbox.Run, a.scheduler.Run}
	if a.revocations != nil {
		tasks = append(tasks, a.revocations.Run)
	}
	return a.Serve(ctx, a.server, tasks...)
}
