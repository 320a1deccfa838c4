// Package app builds the runnable delivery service from a Config: the PostgreSQL store
// (migrated on open), the audit outbox and its delivery to auth, the client of auth
// (credentials, revocations), the audiences use cases (contacts, consent, segments), the gRPC
// API over mTLS through the platform's server, and the admin listener (/metrics, /healthz).
// cmd/delivery and the tests build the service here, so they run the same wiring.
//
// This is the API's first slice: the sender, the campaign watcher, the analytics behaviour
// source and the providers are not wired yet (segments with a behaviour condition are saved but
// not evaluated).
package app

import (
	"context"
	"log/slog"
	"time"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn/authclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/lifecycle"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/grpcapi"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
)

// ServiceName is the delivery service's mesh identity and its name in audit records.
const ServiceName = grpcapi.ServiceName

// Config is everything the delivery service is built from. DefaultConfig holds the documented
// defaults (the flags of cmd/delivery).
type Config struct {
	// Listen is the gRPC (mTLS) address, AdminListen the one of /metrics and /healthz; port 0
	// picks a free port (Addr and AdminAddr tell which).
	Listen, AdminListen string
	// HealthListen is the plaintext gRPC health-only address Kubernetes probes call (empty:
	// none); ConnectionAge how long a client connection lives before the server asks the
	// client to reconnect, so clients spread over the replicas behind a Service.
	HealthListen  string
	ConnectionAge grpcserver.ConnectionAge
	// PostgresURL is the delivery database; New applies its migrations.
	PostgresURL string
	// AuthAddr is the auth service: signing keys, API key verification, revocations and the
	// audit log the outbox delivers to.
	AuthAddr string
	// TLS names the service's mesh certificate, key and CA bundle.
	TLS mtls.Files
	// MaxRecvMsgSize bounds a request message, in bytes.
	MaxRecvMsgSize int
	// GracePeriod bounds how long a stop waits for calls in flight.
	GracePeriod time.Duration

	// Verifier, when set, checks callers' credentials instead of the auth service (tests that
	// make their own principals); auth is then dialed only to deliver audit records.
	Verifier grpcserver.Verifier

	// Tracking configures tracked links, unsubscribe and provider webhooks (app/tracking.go).
	Tracking TrackingConfig
}

// DefaultConfig returns the documented defaults. The database and TLS files have none: they
// are required.
func DefaultConfig() Config {
	return Config{
		Listen: "127.0.0.1:7106", AdminListen: "127.0.0.1:9106", AuthAddr: "127.0.0.1:7101",
		MaxRecvMsgSize: 1 << 20, GracePeriod: grpcserver.DefaultGracePeriod, ConnectionAge: grpcserver.DefaultConnectionAge,
		Tracking: DefaultTrackingConfig(),
	}
}

// App is a built delivery service: migrated, connected, listening, not yet serving.
type App struct {
	*lifecycle.Base
	store       *postgres.Store
	outbox      *auditpg.Outbox
	revocations *authn.RevocationList // nil with Config.Verifier
	audiences   *delivery.Audiences
	server      *grpcserver.Server
	links       *delivery.TrackingLinks // nil: tracking off
	// trackingTasks run with the service when tracking is on (app/tracking.go).
	trackingTasks []func(context.Context) error
}

// New opens the database (applying its migrations and creating the audit outbox), dials auth
// (connections are made on first use), builds the audiences use cases and the gRPC server, and
// opens the listeners. On an error everything opened so far is released.
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
	verifier := cfg.Verifier
	if verifier == nil {
		verifier, a.revocations = auth.Verifier, auth.Revocations
	}

	a.audiences = delivery.NewAudiences(a.store, nil)
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
	deliveryv1.RegisterDeliveryServiceServer(a.server.GRPC(), grpcapi.NewServer(a.audiences))
	if err := a.registerTracking(cfg.Tracking, certs, a.server.GRPC(), logger); err != nil {
		return nil, err
	}

	if err := a.Listen(cfg.Listen, cfg.AdminListen); err != nil {
		return nil, err
	}
	if err := a.ListenHealth(cfg.HealthListen); err != nil {
		return nil, err
	}
	return a, nil
}

// Audiences are the use cases the API serves: for tests and tools that seed or inspect them
// directly, bypassing the API's access rules.
func (a *App) Audiences() *delivery.Audiences { return a.audiences }

// Store is the service's PostgreSQL store (its Pool lets tests inspect rows).
func (a *App) Store() *postgres.Store { return a.store }

// Outbox is the service's audit outbox (tests count the records not yet delivered).
func (a *App) Outbox() *auditpg.Outbox { return a.outbox }

// Run serves the API and the admin listener, delivers audit records and keeps the revocation
// list current until ctx ends (then stops gracefully and returns nil) or one of them fails:
// then the others are stopped and its error is returned. Call it once; Close afterwards.
func (a *App) Run(ctx context.Context) error {
	tasks := []func(context.Context) error{a.outbox.Run}
	tasks = append(tasks, a.trackingTasks...)
	if a.revocations != nil {
		tasks = append(tasks, a.revocations.Run)
	}
	return a.Serve(ctx, a.server, tasks...)
}
