// Package app builds the runnable auth service from a Config: the PostgreSQL store (migrated on
// open), the token signing keys encrypted under the key-encryption keys, the first-start
// bootstrap of the operator and the first tenant, the gRPC API over mTLS through the platform's
// server (AuthService, and dsr's ParticipantService for data-subject requests), and the admin listener (/metrics, /healthz). cmd/auth and the test fixtures
// (internal/servicetest.StartAuth) build the service here, so they run the same wiring.
package app

import (
	"context"
	"errors"
	"log/slog"
	"time"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/kek"
	"github.com/campaignmesh/campaignmesh/internal/platform/lifecycle"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/services/auth"
	"github.com/campaignmesh/campaignmesh/services/auth/grpcapi"
	"github.com/campaignmesh/campaignmesh/services/auth/postgres"
)

// ServiceName is the auth service's mesh identity and its name in audit records.
const ServiceName = "auth"

// Config is everything the auth service is built from. DefaultConfig holds the documented
// defaults (the flags of cmd/auth).
type Config struct {
	// Listen is the gRPC (mTLS) address, AdminListen the one of /metrics and /healthz; port 0
	// picks a free port (Addr and AdminAddr tell which).
	Listen, AdminListen string
	// HealthListen is the plaintext gRPC health-only address Kubernetes probes call (empty:
	// none); ConnectionAge how long a client connection lives before the server asks the
	// client to reconnect, so clients spread over the replicas behind a Service.
	HealthListen  string
	ConnectionAge grpcserver.ConnectionAge
	// PostgresURL is the auth database; New applies its migrations.
	PostgresURL string
	// TLS names the service's mesh certificate, key and CA bundle.
	TLS mtls.Files
	// AccessTokenTTL is the lifetime of access tokens; RefreshAbsoluteTTL how long a session
	// lives from its login, however often it is refreshed.
	AccessTokenTTL, RefreshAbsoluteTTL time.Duration
	// KEKs encrypt the token signing keys at rest (required; see LoadKeyEncryptionKeys). They
	// are never logged.
	KEKs *auth.KeyEncryptionKeys
	// BootstrapDir, when set, receives the credentials of the platform operator and of the
	// first tenant's admin, created on the very first start.
	BootstrapDir string
	// MaxRecvMsgSize bounds a request message, in bytes.
	MaxRecvMsgSize int
	// GracePeriod bounds how long a stop waits for calls in flight.
	GracePeriod time.Duration

	// ConfigureService, when set, adjusts the domain service before its keys are loaded (tests
	// set a clock or a smaller login throttle).
	ConfigureService func(*auth.Service)
}

// DefaultConfig returns the documented defaults. The database, TLS files and KEKs have none:
// they are required.
func DefaultConfig() Config {
	return Config{
		Listen: "127.0.0.1:7101", AdminListen: "127.0.0.1:9101",
		AccessTokenTTL: auth.DefaultAccessTokenTTL, RefreshAbsoluteTTL: auth.DefaultRefreshAbsoluteTTL,
		MaxRecvMsgSize: 1 << 20, GracePeriod: grpcserver.DefaultGracePeriod, ConnectionAge: grpcserver.DefaultConnectionAge,
	}
}

// LoadKeyEncryptionKeys reads the key-encryption keys from spec ("id:base64,…") or from the file
// holding it: exactly one of them. Errors never show key material.
func LoadKeyEncryptionKeys(spec, file string) (*auth.KeyEncryptionKeys, error) {
	keys, err := kek.Load(spec, file)
	if errors.Is(err, kek.ErrNone) {
		return nil, auth.ErrNoKEK // its message says how to generate one for auth
	}
	return keys, err
}

// App is a built auth service: migrated, keys loaded, listening, not yet serving.
type App struct {
	*lifecycle.Base
	store  *postgres.Store
	svc    *auth.Service
	server *grpcserver.Server
}

// New opens the database (applying its migrations), loads the signing keys (encrypting under
// the current KEK any that are not yet, creating the first on a first start), runs the
// first-start bootstrap when Config.BootstrapDir is set, builds the gRPC server and opens both
// listeners. On an error everything opened so far is released.
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
	a.svc = auth.NewService(a.store, cfg.AccessTokenTTL).WithRefreshAbsoluteTTL(cfg.RefreshAbsoluteTTL).WithKeyEncryption(cfg.KEKs)
	if cfg.ConfigureService != nil {
		cfg.ConfigureService(a.svc)
	}
	if err := a.svc.Keys().Load(ctx); err != nil {
		return nil, err
	}
	if cfg.BootstrapDir != "" {
		files, err := a.svc.Bootstrap(ctx, cfg.BootstrapDir)
		if err != nil {
			return nil, err
		}
		if len(files) > 0 {
			// The files hold passwords; only their names are logged.
			logger.Info("first start: created the platform operator and tenant acme; credentials written", "files", files)
		}
	}

	opts, err := grpcapi.ServerOptions(ctx, a.svc, a.store, logger)
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
	authv1.RegisterAuthServiceServer(a.server.GRPC(), grpcapi.NewServer(a.svc))
	dsrv1.RegisterParticipantServiceServer(a.server.GRPC(), grpcapi.NewParticipantServer(a.svc))

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
func (a *App) Service() *auth.Service { return a.svc }

// Store is the service's PostgreSQL store (its Pool lets tests inspect or tamper with rows).
func (a *App) Store() *postgres.Store { return a.store }

// Run serves the API and the admin listener until ctx ends (then stops gracefully and returns
// nil) or one of them fails: then the other is stopped and its error is returned. Call it
// once; Close afterwards.
func (a *App) Run(ctx context.Context) error { return a.Serve(ctx, a.server) }
