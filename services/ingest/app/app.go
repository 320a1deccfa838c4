// Package app builds the runnable ingest service from a Config: the event stream on NATS
// JetStream (connected as the service's NATS user, the streams created or updated; each batch's
// identify events copied to the identify stream for delivery), the live
// view of the privacy bucket (dsr's suppression lists and policies, loaded before serving), the
// intake API (gRPC over mTLS through the platform's server) applying them and publishing to it, the credential checks
// through the auth service with the revocation list that keeps them current, the audit stream
// of refused credentials (delivered to auth), and the admin
// listener (/metrics, /healthz). cmd/ingest, the test fixtures and cmd/bench-ingest all build
// the service here, so they run the same wiring.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit/auditpb"
	auditnats "github.com/campaignmesh/campaignmesh/internal/platform/audit/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn/authclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/lifecycle"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/internal/platform/quota"
	"github.com/campaignmesh/campaignmesh/services/ingest"
	"github.com/campaignmesh/campaignmesh/services/ingest/grpcapi"
	ingestjs "github.com/campaignmesh/campaignmesh/services/ingest/natsjs"
)

// ServiceName is the ingest service's mesh identity and its name in audit records.
const ServiceName = "ingest"

// Config is everything the ingest service is built from. DefaultConfig holds the documented
// defaults (the flags of cmd/ingest).
type Config struct {
	// Listen is the gRPC (mTLS) address, AdminListen the one of /metrics and /healthz; port 0
	// picks a free port (Addr and AdminAddr tell which).
	Listen, AdminListen string
	// HealthListen is the plaintext gRPC health-only address Kubernetes probes call (empty:
	// none); ConnectionAge how long a client connection lives before the server asks the
	// client to reconnect, so clients spread over the replicas behind a Service.
	HealthListen  string
	ConnectionAge grpcserver.ConnectionAge
	// AuthAddr is the auth service: signing keys, API key verification, revocations.
	AuthAddr string
	// TLS names the service's mesh certificate, key and CA bundle.
	TLS mtls.Files
	// NATS is the JetStream server accepted batches are stored in.
	NATS natsjs.ClientFlags
	// Stream is the event stream's definition, created or updated by New.
	Stream natsjs.StreamConfig
	// Limits bound what one request may carry; Rates the events per second of a tenant and of
	// a source (API key or user).
	Limits ingest.Limits
	Rates  ingest.RateLimits
	// Tails bound the live event debugger's streams (TailEvents).
	Tails ingest.TailLimits
	// GracePeriod bounds how long a stop waits for calls in flight.
	GracePeriod time.Duration
	// PrivacyKeyFile holds the mesh's privacy key (base64, privacy.LoadKey), the key of the
	// subject hashes the suppression lists hold and of the hashes of hashed properties; one
	// key for dsr, ingest and analytics. Required unless Hasher is set.
	PrivacyKeyFile string
	// PrivacyLoadTimeout bounds the wait at start for the privacy bucket's contents.
	PrivacyLoadTimeout time.Duration

	// Verifier, when set, checks callers' credentials instead of the auth service (tests and
	// benches that sign their own tokens); AuthAddr is then not dialed.
	Verifier grpcserver.Verifier
	// Hasher, when set, is used instead of the key in PrivacyKeyFile (tests and benches).
	Hasher *privacy.Hasher
}

// DefaultConfig returns the documented defaults. TLS files have none: they are required.
func DefaultConfig() Config {
	return Config{
		Listen: "127.0.0.1:7102", AdminListen: "127.0.0.1:9102", AuthAddr: "127.0.0.1:7101",
		NATS:   natsjs.ClientFlags{URL: "nats://127.0.0.1:14222", User: ServiceName},
		Stream: natsjs.DefaultStream, Limits: ingest.DefaultLimits, Rates: ingest.DefaultRateLimits,
		Tails: ingest.DefaultTailLimits, GracePeriod: grpcserver.DefaultGracePeriod, ConnectionAge: grpcserver.DefaultConnectionAge, PrivacyLoadTimeout: 30 * time.Second,
	}
}

// App is a built ingest service: connected, listening, not yet serving.
type App struct {
	*lifecycle.Base
	revocations *authn.RevocationList // nil with Config.Verifier
	audit       *auditnats.Sink
	server      *grpcserver.Server
	privacy     *privacy.View
	quotas      *quota.View
}

// New connects to NATS (creating or updating the event streams) and to the auth service,
// builds the intake API and opens both listeners. On an error everything opened so far is
// released.
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
	hasher := cfg.Hasher
	if hasher == nil {
		if hasher, err = privacy.LoadHasher(cfg.PrivacyKeyFile); err != nil {
			return nil, err
		}
	}
	nc, js, err := cfg.NATS.Connect(ServiceName)
	if err != nil {
		return nil, err
	}
	a.OnClose(nc.Close)
	if err := natsjs.EnsureStreams(ctx, js, cfg.Stream); err != nil {
		return nil, err
	}
	if err := natsjs.EnsureIdentifyStream(ctx, js); err != nil {
		return nil, err
	}
	if a.privacy, err = watchPrivacy(ctx, a, js, cfg.PrivacyLoadTimeout, logger); err != nil {
		return nil, err
	}
	if a.quotas, err = watchQuotas(ctx, a, js, logger); err != nil {
		return nil, err
	}
	verifier := cfg.Verifier
	var appender auditpb.Appender // nil with Config.Verifier: records are stored, not delivered
	if verifier == nil {
		auth, err := authclient.Dial(cfg.AuthAddr, certs, logger)
		if err != nil {
			return nil, err
		}
		a.OnClose(auth.Close)
		verifier, appender, a.revocations = auth.Verifier, auth.Client, auth.Revocations
	}
	// Refused credentials are records in the audit stream, delivered to auth by the sink's Run.
	if a.audit, err = auditnats.New(ctx, js, ServiceName, appender, logger, auditnats.DefaultConfig); err != nil {
		return nil, err
	}

	a.server = grpcserver.New(
		grpcserver.WithService(ServiceName),
		grpcserver.WithAuditor(a.audit),
		grpcserver.WithLogger(logger),
		grpcserver.WithTLS(certs.ServerConfig()),
		grpcserver.WithVerifier(verifier),
		grpcserver.WithMetrics(a.Registry()),
		// Successful event calls log at debug: at INFO a line per call is gigabytes an hour.
		grpcserver.WithQuietCalls(grpcapi.HotMethods...),
		// Room for the largest request the limits allow, plus its framing.
		grpcserver.WithMaxRecvMsgSize(cfg.Limits.MaxBatchBytes+64<<10),
		grpcserver.WithGracePeriod(cfg.GracePeriod),
		cfg.ConnectionAge.Option(),
	)
	// The live event debugger: a tail opened on any instance sees the outcomes of all of them.
	// The relay's watch lives as long as the App, not New's context.
	rctx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	a.OnClose(stopRelay)
	tails, err := ingestjs.OpenTailRelay(rctx, nc, js, ingest.NewTails(cfg.Tails))
	if err != nil {
		return nil, err
	}
	svc := ingest.NewService(ingestjs.NewPublisher(js, a.Registry()), cfg.Limits, cfg.Rates).WithMetrics(a.Registry()).
		WithPrivacy(ingest.Privacy{State: a.privacy, Hasher: hasher}).WithTails(tails).
		WithDeadLetters(ingestjs.NewDeadLetters(js, ingestjs.DefaultConfig.PublishTimeout)).
		WithIdentify(ingestjs.NewIdentifyPublisher(js, ingestjs.DefaultConfig.PublishTimeout)).
		WithQuotas(a.quotas)
	ingestv1.RegisterIngestServiceServer(a.server.GRPC(), grpcapi.NewServer(svc).WithTails(tails))

	if err := a.Listen(cfg.Listen, cfg.AdminListen); err != nil {
		return nil, err
	}
	if err := a.ListenHealth(cfg.HealthListen); err != nil {
		return nil, err
	}
	return a, nil
}

// watchPrivacy opens the privacy bucket (creating it when missing) and loads it into a View
// that follows it until the App is closed; it fails when the bucket cannot be opened or its
// contents do not load within timeout, so ingest never serves without the suppression lists.
// A change made by dsr applies to ingest's next requests within milliseconds; after a NATS
// outage, within about a second of NATS coming back (privacy.Watch has the details).
func watchPrivacy(ctx context.Context, a *App, js jetstream.JetStream, timeout time.Duration, logger *slog.Logger) (*privacy.View, error) {
	kv, err := privacy.OpenBucket(ctx, js)
	if err != nil {
		return nil, err
	}
	// The View follows the bucket for the App's life, not New's context's; loading ends with
	// that context or timeout, whichever comes first.
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	a.OnClose(stop)
	unhook := context.AfterFunc(ctx, stop)
	timer := time.AfterFunc(timeout, stop)
	view, err := privacy.Watch(wctx, kv, logger)
	if !timer.Stop() || !unhook() || err != nil {
		return nil, fmt.Errorf("load privacy bucket %s (within %s): %w", privacy.Bucket, timeout, errors.Join(err, context.Cause(wctx)))
	}
	// After a NATS restart, watch again at once rather than when nats.go notices (10-20 s).
	privacy.ReloadOnReconnect(wctx, js.Conn(), view)
	return view, nil
}

// QuotaLoadWait bounds the wait at start for the quota bucket's contents: past it (or when the
// bucket cannot be read: billing has not created it yet) ingest serves without quotas and
// picks them up as soon as it can (quota.Watch).
const QuotaLoadWait = 5 * time.Second

// watchQuotas follows billing's quota bucket for the App's life: every request's accepted
// events are checked against the tenant's events_accepted quotas (ingest.Service.WithQuotas).
func watchQuotas(ctx context.Context, a *App, js jetstream.JetStream, logger *slog.Logger) (*quota.View, error) {
	qctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	a.OnClose(stop)
	view, err := quota.Watch(qctx, js, logger, QuotaLoadWait)
	if err != nil {
		return nil, err
	}
	quota.ReloadOnReconnect(qctx, js.Conn(), view)
	return view, nil
}

// Quotas is the live view of the tenants' quotas the intake enforces (tests publish into the
// bucket and wait for it here).
func (a *App) Quotas() *quota.View { return a.quotas }

// Privacy is the live view of the tenants' privacy policies and suppression lists the intake
// applies (tests put into the bucket and wait for it here).
func (a *App) Privacy() *privacy.View { return a.privacy }

// Run serves the intake API, the revocation list and the admin listener until ctx ends (then
// stops gracefully and returns nil) or one of them fails: then the others are stopped and its
// error is returned. Call it once; Close afterwards.
func (a *App) Run(ctx context.Context) error {
	if a.revocations == nil {
		return a.Serve(ctx, a.server)
	}
	return a.Serve(ctx, a.server, a.revocations.Run, a.audit.Run)
}
