// Package app builds the runnable delivery service from a Config: the PostgreSQL store
// (migrated on open), the audit outbox and its delivery to auth, the client of auth
// (credentials, revocations), the audiences use cases (contacts, consent, segments), the gRPC
// API over mTLS through the platform's server, and the admin listener (/metrics, /healthz).
// cmd/delivery and the tests build the service here, so they run the same wiring.
//
// Segments' behaviour conditions are asked of the analytics service (AnalyticsAddr). The
// sender, the campaign watcher and the providers are not wired here yet.
package app

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn/authclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/lifecycle"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/internal/platform/quota"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/analyticsclient"
	"github.com/campaignmesh/campaignmesh/services/delivery/grpcapi"
	deliverynats "github.com/campaignmesh/campaignmesh/services/delivery/nats"
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
	// AnalyticsAddr is the analytics service, which answers segments' behaviour conditions;
	// empty: none (such segments answer UNAVAILABLE when evaluated).
	AnalyticsAddr string
	// NATS is the JetStream server holding dsr's PRIVACY bucket (the platform's suppression
	// list, which recipient eligibility and segment counts honour); an empty URL: none is
	// followed. PrivacyKeyFile holds the mesh's privacy key (base64, privacy.LoadKey), which
	// hashes contacts' identifiers as dsr hashed the suppressed ones; required with NATS.
	NATS           natsjs.ClientFlags
	PrivacyKeyFile string
	// PrivacyLoadTimeout bounds the wait at start for the privacy bucket's contents.
	PrivacyLoadTimeout time.Duration
	// Hasher, when set, is used instead of the key in PrivacyKeyFile (tests).
	Hasher *privacy.Hasher
	// TLS names the service's mesh certificate, key and CA bundle.
	TLS mtls.Files
	// MaxRecvMsgSize bounds a request message, in bytes.
	MaxRecvMsgSize int
	// GracePeriod bounds how long a stop waits for calls in flight.
	GracePeriod time.Duration
	// ImportMaxBytes and ImportMaxRows bound one contacts import (0: the domain's defaults,
	// delivery.DefaultImportLimits).
	ImportMaxBytes int64
	ImportMaxRows  int

	// Verifier, when set, checks callers' credentials instead of the auth service (tests that
	// make their own principals); auth is then dialed only to deliver audit records.
	Verifier grpcserver.Verifier

	// Sending is how campaigns are sent (providers, limits, campaigns' address).
	Sending SendingConfig
	// Links makes messages' tracked links (the tracking adapter); nil: previews, test sends
	// and Compose answer that tracking is not configured.
	Links delivery.Links
	// TestSendsPerMinute bounds each tenant's test sends (delivery.DefaultTestSendRate when 0).
	TestSendsPerMinute int
	// Tracking configures tracked links, unsubscribe and provider webhooks (app/tracking.go).
	Tracking TrackingConfig
}

// DefaultConfig returns the documented defaults. The database and TLS files have none: they
// are required.
func DefaultConfig() Config {
	return Config{
		Listen: "127.0.0.1:7106", AdminListen: "127.0.0.1:9106", AuthAddr: "127.0.0.1:7101", AnalyticsAddr: "127.0.0.1:7104",
		MaxRecvMsgSize: 1 << 20, GracePeriod: grpcserver.DefaultGracePeriod, ConnectionAge: grpcserver.DefaultConnectionAge,
		Sending: DefaultSendingConfig(),
		NATS:    natsjs.ClientFlags{User: ServiceName}, PrivacyLoadTimeout: 30 * time.Second,
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
	messages    *delivery.Messages
	identify    *deliverynats.IdentifyConsumer // nil without NATS
	server      *grpcserver.Server
	dispatcher  *delivery.Dispatcher    // nil: nothing to send with
	links       *delivery.TrackingLinks // nil: tracking off
	// quotas are billing's quotas the senders and test sends apply (nil without NATS: none);
	// quotaExceeded is campaignmesh_quota_exceeded_total.
	quotas        *quota.View
	quotaExceeded *prometheus.CounterVec
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

	var behaviour delivery.BehaviourSource
	if cfg.AnalyticsAddr != "" {
		client, conn, err := analyticsclient.Dial(cfg.AnalyticsAddr, certs)
		if err != nil {
			return nil, err
		}
		a.OnClose(func() { _ = conn.Close() })
		behaviour = client
	}
	a.audiences = delivery.NewAudiences(a.store, behaviour)
	if cfg.NATS.URL != "" {
		if err := a.followSuppressions(ctx, cfg, logger); err != nil {
			return nil, err
		}
	}
	if cfg.ImportMaxBytes > 0 || cfg.ImportMaxRows > 0 {
		lim := delivery.DefaultImportLimits
		if cfg.ImportMaxBytes > 0 {
			lim.MaxBytes = cfg.ImportMaxBytes
		}
		if cfg.ImportMaxRows > 0 {
			lim.MaxRows = cfg.ImportMaxRows
		}
		a.audiences.WithImportLimits(lim)
	}
	links := cfg.Links
	if links == nil {
		if a.links, err = buildLinks(cfg.Tracking); err != nil {
			return nil, err
		}
		if a.links != nil {
			links = a.links
		}
	}
	if cfg.Tracking.TwilioAuthTokenFile == "" {
		// One auth token: Twilio signs its callbacks with the token the messages are sent with.
		cfg.Tracking.TwilioAuthTokenFile = cfg.Sending.TwilioAuthTokenFile
	}
	if cfg.Sending.TwilioStatusCallback == "" && a.links != nil {
		cfg.Sending.TwilioStatusCallback = strings.TrimRight(cfg.Tracking.PublicURL, "/") + "/webhooks/twilio/status"
	}
	providers, err := cfg.Sending.providers(logger)
	if err != nil {
		return nil, err
	}
	a.quotaExceeded = quota.NewExceededCounter()
	a.Registry().MustRegister(a.quotaExceeded)
	a.messages = delivery.NewMessages(delivery.MessagesConfig{Store: a.store, Contacts: a.store, Segments: a.store, Links: links, Providers: providers,
		TestSendsPerMinute: cfg.TestSendsPerMinute, Eligible: a.audiences.EligibleNow, Quotas: a.quotas})
	if a.dispatcher, err = a.buildDispatcher(cfg.Sending, providers, certs, logger); err != nil {
		return nil, err
	}
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
	deliveryv1.RegisterSendingServiceServer(a.server.GRPC(), grpcapi.NewSendingServer(delivery.NewSending(postgres.NewLedger(a.store.Pool())).WithQuotas(a.quotas)))
	deliveryv1.RegisterMessagesServiceServer(a.server.GRPC(), grpcapi.NewMessagesServer(a.messages))
	dsrv1.RegisterParticipantServiceServer(a.server.GRPC(), grpcapi.NewParticipantServer(delivery.NewSubjects(a.audiences, a.store)))
	deliveryv1.RegisterDeliveryUsageServiceServer(a.server.GRPC(), grpcapi.NewUsageServer(delivery.NewUsage(postgres.NewUsage(a.store.Pool()))))
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

// followSuppressions connects to NATS and makes the audiences honour the suppression list in
// the PRIVACY bucket, followed for the App's life (not New's context's), and prepares the
// consumer of identify events (run by Run).
func (a *App) followSuppressions(ctx context.Context, cfg Config, logger *slog.Logger) error {
	hasher := cfg.Hasher
	if hasher == nil {
		var err error
		if hasher, err = privacy.LoadHasher(cfg.PrivacyKeyFile); err != nil {
			return err
		}
	}
	nc, js, err := cfg.NATS.Connect(ServiceName)
	if err != nil {
		return err
	}
	a.OnClose(nc.Close)
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	a.OnClose(stop)
	sup, err := deliverynats.WatchSuppressions(life, js, hasher, cfg.PrivacyLoadTimeout, logger)
	if err != nil {
		return err
	}
	a.audiences.WithSuppressions(sup)
	// Billing's quotas: followed for the App's life; missing or unreadable, nothing is held
	// (quota.Watch) and they apply as soon as they can be read.
	if a.quotas, err = quota.Watch(life, js, logger, QuotaLoadWait); err != nil {
		return err
	}
	quota.ReloadOnReconnect(life, nc, a.quotas)
	a.identify, err = deliverynats.NewIdentifyConsumer(js, a.audiences, a.Registry(), logger)
	return err
}

// QuotaLoadWait bounds the wait at start for the quota bucket's contents: past it (or when the
// bucket cannot be read: billing has not created it yet) delivery holds nothing and applies
// the quotas as soon as it can read them (quota.Watch).
const QuotaLoadWait = 5 * time.Second

// Quotas is the live view of the tenants' quotas the senders apply (nil without NATS).
func (a *App) Quotas() *quota.View { return a.quotas }

// Audiences are the use cases the API serves: for tests and tools that seed or inspect them
// directly, bypassing the API's access rules.
func (a *App) Audiences() *delivery.Audiences { return a.audiences }

// Messages are the content, sender identity and test send use cases, and the Compose the
// sender renders each recipient's message with.
func (a *App) Messages() *delivery.Messages { return a.messages }

// Store is the service's PostgreSQL store (its Pool lets tests inspect rows).
func (a *App) Store() *postgres.Store { return a.store }

// Outbox is the service's audit outbox (tests count the records not yet delivered).
func (a *App) Outbox() *auditpg.Outbox { return a.outbox }

// Run serves the API and the admin listener, delivers audit records and keeps the revocation
// list current until ctx ends (then stops gracefully and returns nil) or one of them fails:
// then the others are stopped and its error is returned. Call it once; Close afterwards.
func (a *App) Run(ctx context.Context) error {
	tasks := []func(context.Context) error{a.outbox.Run}
	if a.identify != nil {
		tasks = append(tasks, a.identify.Run)
	}
	tasks = append(tasks, a.trackingTasks...)
	if a.revocations != nil {
		tasks = append(tasks, a.revocations.Run)
	}
	if a.dispatcher != nil {
		tasks = append(tasks, runDispatcher(a.dispatcher))
	}
	return a.Serve(ctx, a.server, tasks...)
}
