// Package app builds the runnable dsr service from a Config: the PostgreSQL store (migrated on
// open), the audit outbox and its delivery to auth, the clients of auth (credentials,
// revocations) and of every configured participant, the PRIVACY bucket on NATS JetStream, the
// receipt keyring, the job runner and its maintenance loops, the gRPC API over mTLS through the
// platform's server, and the admin listener (/metrics, /healthz). cmd/dsr and the test
// fixtures (internal/servicetest.StartDsr) build the service here.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn/authclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/kek"
	"github.com/campaignmesh/campaignmesh/internal/platform/lifecycle"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/services/dsr"
	"github.com/campaignmesh/campaignmesh/services/dsr/grpcapi"
	"github.com/campaignmesh/campaignmesh/services/dsr/natskv"
	"github.com/campaignmesh/campaignmesh/services/dsr/participantclient"
	"github.com/campaignmesh/campaignmesh/services/dsr/postgres"
	dsrprom "github.com/campaignmesh/campaignmesh/services/dsr/prometheus"
)

// ServiceName is the dsr service's mesh identity and its name in audit records.
const ServiceName = grpcapi.ServiceName

// Config is everything the dsr service is built from. DefaultConfig holds the documented
// defaults (the flags of cmd/dsr).
type Config struct {
	// Listen is the gRPC (mTLS) address, AdminListen the one of /metrics and /healthz; port 0
	// picks a free port.
	Listen, AdminListen string
	// HealthListen is the plaintext gRPC health-only address Kubernetes probes call (empty:
	// none); ConnectionAge how long a client connection lives before the server asks the
	// client to reconnect, so clients spread over the replicas behind a Service.
	HealthListen  string
	ConnectionAge grpcserver.ConnectionAge
	// PostgresURL is the dsr database; New applies its migrations.
	PostgresURL string
	// AuthAddr is the auth service: signing keys, API key verification, revocations and the
	// audit log the outbox delivers to.
	AuthAddr string
	// NATS is the JetStream server holding the PRIVACY bucket (user "dsr").
	NATS natsjs.ClientFlags
	// PrivacyKeyFile holds the mesh's privacy key (subject hashes); KEKFile the key-encryption
	// keys that seal the receipt signing key ("id:base64,…", auth's format).
	PrivacyKeyFile, KEKFile string
	// Participants are the services dsr fans requests out to.
	Participants []participantclient.Spec
	// TLS names the service's mesh certificate, key and CA bundle.
	TLS mtls.Files
	// Workers is how many requests progress at once; PollInterval how often an idle runner
	// looks for due requests and polls running erasures; Lease how long a crashed runner's
	// request waits before another runner takes it.
	Workers             int
	PollInterval, Lease time.Duration
	MaxRecvMsgSize      int
	GracePeriod         time.Duration

	// Verifier, when set, checks callers' credentials instead of the auth service (tests).
	Verifier grpcserver.Verifier
	// Hasher and KEKs, when set, replace PrivacyKeyFile and KEKFile (tests).
	Hasher *privacy.Hasher
	KEKs   *kek.Keys
	// ParticipantImpls, when set, are the participants instead of dialing Participants (tests).
	ParticipantImpls []dsr.Participant
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Listen: "127.0.0.1:7105", AdminListen: "127.0.0.1:9105", AuthAddr: "127.0.0.1:7101",
		NATS:         natsjs.ClientFlags{URL: "nats://127.0.0.1:14222", User: ServiceName},
		Participants: []participantclient.Spec{{Name: "analytics", Addr: "127.0.0.1:7104"}, {Name: "auth", Addr: "127.0.0.1:7101"}, {Name: "delivery", Addr: "127.0.0.1:7106"}},
		Workers:      dsr.DefaultWorkers, PollInterval: dsr.DefaultPollInterval, Lease: dsr.DefaultLease,
		MaxRecvMsgSize: 1 << 20, GracePeriod: grpcserver.DefaultGracePeriod, ConnectionAge: grpcserver.DefaultConnectionAge,
	}
}

// App is a built dsr service: migrated, connected, keys loaded, listening, not yet serving.
type App struct {
	*lifecycle.Base
	store       *postgres.Store
	outbox      *auditpg.Outbox
	revocations *authn.RevocationList
	svc         *dsr.Service
	runner      *dsr.Runner
	server      *grpcserver.Server
	bucket      *natskv.Bucket
}

// New opens the database, connects to NATS (opening the PRIVACY bucket), dials auth and the
// participants (connections are made on first use), loads or creates the receipt key, builds
// the domain, the runner and the gRPC server, and opens both listeners.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (_ *App, err error) {
	a := &App{Base: lifecycle.New(logger)}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	hasher := cfg.Hasher
	if hasher == nil {
		if hasher, err = privacy.LoadHasher(cfg.PrivacyKeyFile); err != nil {
			return nil, err
		}
	}
	keks := cfg.KEKs
	if keks == nil {
		if keks, err = kek.Load("", cfg.KEKFile); err != nil {
			return nil, fmt.Errorf("receipt key encryption: %w", err)
		}
	}
	certs, err := mtls.NewSource(cfg.TLS, logger)
	if err != nil {
		return nil, err
	}
	if a.store, err = postgres.Open(ctx, cfg.PostgresURL); err != nil {
		return nil, err
	}
	a.OnClose(a.store.Close)
	nc, js, err := cfg.NATS.Connect(ServiceName)
	if err != nil {
		return nil, err
	}
	a.OnClose(nc.Close)
	if a.bucket, err = natskv.Open(ctx, js); err != nil {
		return nil, err
	}
	auth, err := authclient.Dial(cfg.AuthAddr, certs, logger)
	if err != nil {
		return nil, err
	}
	a.OnClose(auth.Close)
	if a.outbox, err = auditpg.NewOutbox(ctx, a.store.Pool(), auth.Client, logger); err != nil {
		return nil, err
	}
	participants := cfg.ParticipantImpls
	if participants == nil {
		for _, spec := range cfg.Participants {
			p, conn, err := participantclient.Dial(spec, certs)
			if err != nil {
				return nil, err
			}
			a.OnClose(func() { _ = conn.Close() })
			participants = append(participants, p)
		}
	}
	names := make([]string, 0, len(participants))
	for _, p := range participants {
		names = append(names, p.Name())
	}
	verifier := cfg.Verifier
	if verifier == nil {
		verifier, a.revocations = auth.Verifier, auth.Revocations
	}
	keys := dsr.NewKeyring(a.store, keks)
	if err := keys.Load(ctx); err != nil {
		return nil, err
	}
	a.runner = dsr.NewRunner(a.store, hasher, a.bucket, participants, keys,
		dsr.WithWorkers(cfg.Workers), dsr.WithPollInterval(cfg.PollInterval), dsr.WithLease(cfg.Lease), dsr.WithRunnerID(runnerID(cfg.Listen)),
		dsr.WithRunnerLogger(logger), dsr.WithMetrics(dsrprom.New(a.Registry())))
	a.svc = dsr.NewService(a.store, hasher, a.bucket, names, keys).WithLogger(logger).WithWake(a.runner.Wake)
	a.server = grpcserver.New(append(grpcapi.ServerOptions(verifier, a.outbox, logger),
		grpcserver.WithTLS(certs.ServerConfig()),
		grpcserver.WithMetrics(a.Registry()),
		grpcserver.WithMaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpcserver.WithGracePeriod(cfg.GracePeriod),
		cfg.ConnectionAge.Option(),
	)...)
	dsrv1.RegisterDsrServiceServer(a.server.GRPC(), grpcapi.NewServer(a.svc))
	if err := a.Listen(cfg.Listen, cfg.AdminListen); err != nil {
		return nil, err
	}
	if err := a.ListenHealth(cfg.HealthListen); err != nil {
		return nil, err
	}
	return a, nil
}

// Service is the domain service the API serves (tests seed and inspect through it).
func (a *App) Service() *dsr.Service { return a.svc }

// Runner is the job runner (tests reconcile and purge through it).
func (a *App) Runner() *dsr.Runner { return a.runner }

// Store is the service's PostgreSQL store.
func (a *App) Store() *postgres.Store { return a.store }

// Outbox is the service's audit outbox.
func (a *App) Outbox() *auditpg.Outbox { return a.outbox }

// Run serves the API and the admin listener, runs the job runner and its maintenance,
// delivers audit records and keeps the revocation list current until ctx ends.
func (a *App) Run(ctx context.Context) error {
	tasks := []func(context.Context) error{a.outbox.Run, a.runner.Run, a.runner.Maintain}
	if a.revocations != nil {
		tasks = append(tasks, a.revocations.Run)
	}
	return a.Serve(ctx, a.server, tasks...)
}

// runnerID is the job runner's identity: the host and the gRPC listen address, which a restarted
// process keeps and no two live processes share (they could not both listen on it).
func runnerID(listen string) string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown-host"
	}
	return host + "/" + listen
}
