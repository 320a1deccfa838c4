// Package app builds the runnable billing service from a Config: the PostgreSQL store
// (migrated on open), the audit outbox and its delivery to auth, the auth client (credentials,
// revocations), the analytics and delivery usage sources, NATS (the USAGE consumer, the QUOTAS
// bucket), the metering job, the gRPC API over mTLS through the platform's server, and the
// admin listener (/metrics, /healthz). cmd/billing and the test fixtures (internal/servicetest.StartBilling) build the
// service here, so they run the same wiring.
package app

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"time"

	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn/authclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/lifecycle"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/billing"
	"github.com/campaignmesh/campaignmesh/services/billing/analyticsclient"
	billingauth "github.com/campaignmesh/campaignmesh/services/billing/authclient"
	"github.com/campaignmesh/campaignmesh/services/billing/deliveryclient"
	"github.com/campaignmesh/campaignmesh/services/billing/grpcapi"
	billingnats "github.com/campaignmesh/campaignmesh/services/billing/nats"
	"github.com/campaignmesh/campaignmesh/services/billing/postgres"
	billingprom "github.com/campaignmesh/campaignmesh/services/billing/prometheus"
	"github.com/campaignmesh/campaignmesh/services/billing/stripe"
)

// ServiceName is the billing service's mesh identity and its name in audit records.
const ServiceName = grpcapi.ServiceName

// Config is everything the billing service is built from. DefaultConfig holds the documented
// defaults (the flags of cmd/billing).
type Config struct {
	// Listen is the gRPC (mTLS) address, AdminListen the one of /metrics and /healthz; port 0
	// picks a free port (Addr and AdminAddr tell which).
	Listen, AdminListen string
	// HealthListen is the plaintext gRPC health-only address for probes (empty: none).
	HealthListen  string
	ConnectionAge grpcserver.ConnectionAge
	// PostgresURL is the billing database; New applies its migrations.
	PostgresURL string
	// AuthAddr is the auth service: signing keys, API key verification, revocations and the
	// audit log the outbox delivers to.
	AuthAddr string
	// AnalyticsAddr and DeliveryAddr are the sources of events_stored and storage_bytes, and of
	// messages_email, messages_sms and contacts_stored (their internal GetUsageCounts RPCs);
	// empty: that source is not asked, and its meters stay as they are (0 for a new day).
	AnalyticsAddr, DeliveryAddr string
	// TLS names the service's mesh certificate, key and CA bundle.
	TLS mtls.Files
	// NATS is the JetStream server of the USAGE stream and the QUOTAS bucket.
	NATS natsjs.ClientFlags
	// Metering are the job's interval and the time after its end a day closes.
	Metering billing.MeteringConfig
	// Stripe are the meter-event reporting, reconciliation and webhook settings.
	Stripe StripeConfig
	// AccountGracePeriod is how long an account stays flagged (a failed payment, a lapsed
	// subscription) before the tenant is suspended.
	AccountGracePeriod time.Duration
	// MaxRecvMsgSize bounds a request message, in bytes.
	MaxRecvMsgSize int
	// GracePeriod bounds how long a stop waits for calls in flight.
	GracePeriod time.Duration

	// Verifier, when set, checks callers' credentials instead of the auth service (tests).
	Verifier grpcserver.Verifier
	// Sources, when set, count the meters of analytics and delivery instead of their services
	// (tests); AnalyticsAddr and DeliveryAddr are then not dialed.
	Sources []billing.Source
}

// StripeConfig are billing's Stripe settings. Without an API key nothing is reported to Stripe
// and the reconciliation API is not served; without a webhook secret every webhook is refused
// as unsigned.
type StripeConfig struct {
	// URL is Stripe's API origin, or a stand-in's.
	URL string
	// APIKeyFile holds the secret key; WebhookSecretFile the webhook endpoint's signing secret.
	APIKeyFile, WebhookSecretFile string
	// ReportInterval is the time between two rounds of meter-event reporting.
	ReportInterval time.Duration
	// MeterPrefix prefixes a meter's name to make its Stripe event name (cm_events_accepted).
	MeterPrefix string
}

// DefaultConfig returns the documented defaults. The database and TLS files have none: they
// are required.
func DefaultConfig() Config {
	return Config{
		Listen: "127.0.0.1:7107", AdminListen: "127.0.0.1:9107", AuthAddr: "127.0.0.1:7101",
		AnalyticsAddr: "127.0.0.1:7104", DeliveryAddr: "127.0.0.1:7106",
		NATS:               natsjs.ClientFlags{User: ServiceName},
		Metering:           billing.DefaultMetering,
		Stripe:             StripeConfig{URL: stripe.DefaultBaseURL, ReportInterval: 30 * time.Second, MeterPrefix: "cm_"},
		AccountGracePeriod: billing.DefaultGracePeriod,
		MaxRecvMsgSize:     1 << 20, GracePeriod: grpcserver.DefaultGracePeriod, ConnectionAge: grpcserver.DefaultConnectionAge,
	}
}

// App is a built billing service: migrated, connected, listening, not yet serving.
type App struct {
	*lifecycle.Base
	store       *postgres.Store
	outbox      *auditpg.Outbox
	revocations *authn.RevocationList // nil with Config.Verifier
	svc         *billing.Service
	metering    *billing.Metering
	units       *billingnats.UsageConsumer
	server      *grpcserver.Server
	tasks       []func(context.Context) error // the Stripe reporter, reconciliation, grace jobs
}

// New opens the database, dials auth, connects to NATS (creating the QUOTAS bucket), builds the domain, the metering job and its consumers and the gRPC server,
// and opens the listeners. On an error everything opened so far is released.
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

	nc, js, err := cfg.NATS.Connect(ServiceName)
	if err != nil {
		return nil, err
	}
	a.OnClose(nc.Close)
	quotas, err := billingnats.OpenQuotaPublisher(ctx, js)
	if err != nil {
		return nil, err
	}
	a.units = billingnats.NewUsageConsumer(js, a.store, billingnats.ConsumerConfig{}, logger)
	sources := cfg.Sources
	if sources == nil {
		if sources, err = a.dialSources(cfg, certs); err != nil {
			return nil, err
		}
	}
	a.metering = billing.NewMetering(a.store, cfg.Metering, logger, sources...).
		WithQuotas(quotas, billingprom.New(a.Registry())).
		WithAcceptedAsOf(a.units.AcceptedAsOf)
	a.svc = billing.NewService(a.store, a.metering, logger)

	a.server = grpcserver.New(append(grpcapi.ServerOptions(verifier, a.outbox, logger),
		grpcserver.WithTLS(certs.ServerConfig()),
		grpcserver.WithMetrics(a.Registry()),
		grpcserver.WithMaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpcserver.WithGracePeriod(cfg.GracePeriod),
		cfg.ConnectionAge.Option(),
	)...)
	billingv1.RegisterBillingServiceServer(a.server.GRPC(), grpcapi.NewServer(a.svc))
	if err := a.wireStripe(cfg, certs, logger); err != nil {
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

// wireStripe builds the accounts and webhooks (BillingAccountService), the grace job that
// suspends through auth, and with an API key the meter-event reporter and the reconciliation
// (ReconciliationService, its daily job).
func (a *App) wireStripe(cfg Config, certs *mtls.Source, logger *slog.Logger) error {
	secret := make([]byte, 32) // no secret configured: a random one no sender knows
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	if cfg.Stripe.WebhookSecretFile != "" {
		var err error
		if secret, err = stripe.LoadWebhookSecret(cfg.Stripe.WebhookSecretFile); err != nil {
			return err
		}
	}
	verifier, err := stripe.NewVerifier(secret)
	if err != nil {
		return err
	}
	accounts := billing.NewAccounts(a.store, logger)
	webhooks := billing.NewWebhooks(verifier, a.store, logger)
	billingv1.RegisterBillingAccountServiceServer(a.server.GRPC(), grpcapi.NewAccountServer(accounts, webhooks))

	authConn, err := grpcclient.Dial(cfg.AuthAddr, "auth", certs)
	if err != nil {
		return err
	}
	a.OnClose(func() { _ = authConn.Close() })
	grace, err := billing.NewGrace(a.store, billingauth.New(authConn), billing.WithGracePeriod(cfg.AccountGracePeriod), billing.WithGraceLogger(logger))
	if err != nil {
		return err
	}
	a.tasks = append(a.tasks, grace.Run)

	// The report series exist (at 0) without Stripe too: dashboards and alerts read them.
	reportMetrics := billingprom.NewReportMetrics(a.Registry())
	if cfg.Stripe.APIKeyFile == "" {
		logger.Warn("no Stripe API key (-stripe-api-key-file): usage is not reported to Stripe")
		return nil
	}
	key, err := config.ReadSecret(cfg.Stripe.APIKeyFile)
	if err != nil {
		return fmt.Errorf("stripe api key: %w", err)
	}
	client, err := stripe.New(stripe.Config{BaseURL: cfg.Stripe.URL, APIKey: stripe.Secret(key)})
	if err != nil {
		return err
	}
	reporter := billing.NewReporter(a.store, client, billing.ReporterConfig{EventNamePrefix: cfg.Stripe.MeterPrefix,
		Interval: cfg.Stripe.ReportInterval, Logger: logger, Metrics: reportMetrics})
	reconciler := billing.NewReconciler(a.store, stripe.NewUsage(client),
		func(m billing.Meter) string { return cfg.Stripe.MeterPrefix + string(m) }, time.Now, logger)
	billingv1.RegisterReconciliationServiceServer(a.server.GRPC(), grpcapi.NewReconcileServer(reconciler))
	a.tasks = append(a.tasks, reporter.Run, func(ctx context.Context) error { return reconciler.RunDaily(ctx, time.Hour) })
	return nil
}

// dialSources connects to the analytics and delivery services that are configured (the
// connections are made on first use).
func (a *App) dialSources(cfg Config, certs *mtls.Source) ([]billing.Source, error) {
	var sources []billing.Source
	if cfg.AnalyticsAddr != "" {
		client, conn, err := analyticsclient.Dial(cfg.AnalyticsAddr, certs)
		if err != nil {
			return nil, err
		}
		a.OnClose(func() { _ = conn.Close() })
		sources = append(sources, client)
	}
	if cfg.DeliveryAddr != "" {
		client, conn, err := deliveryclient.Dial(cfg.DeliveryAddr, certs)
		if err != nil {
			return nil, err
		}
		a.OnClose(func() { _ = conn.Close() })
		sources = append(sources, client)
	}
	return sources, nil
}

// Service is the domain service the API serves (tests seed and inspect through it).
func (a *App) Service() *billing.Service { return a.svc }

// Metering is the metering job (tests run rounds of it).
func (a *App) Metering() *billing.Metering { return a.metering }

// Store is the service's PostgreSQL store.
func (a *App) Store() *postgres.Store { return a.store }

// Run serves the API and the admin listener, delivers audit records, keeps the revocation list
// current, records the usage units and runs the metering job until ctx ends
// (then stops gracefully and returns nil) or one of them fails: then the others are stopped and
// its error is returned. Call it once; Close afterwards.
func (a *App) Run(ctx context.Context) error {
	tasks := []func(context.Context) error{a.outbox.Run, a.metering.Run, a.units.Run}
	for _, task := range a.tasks {
		// Some jobs answer ctx's error when it ends: a stop, not a failure.
		tasks = append(tasks, func(ctx context.Context) error {
			if err := task(ctx); err != nil && ctx.Err() == nil {
				return err
			}
			return nil
		})
	}
	if a.revocations != nil {
		tasks = append(tasks, a.revocations.Run)
	}
	return a.Serve(ctx, a.server, tasks...)
}
