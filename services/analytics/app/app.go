// Package app builds the runnable analytics service from a Config: the query API over
// ClickHouse (gRPC over mTLS, through the platform's server), the writer role that moves
// accepted events from JetStream into ClickHouse, the revocation list that keeps credentials
// current, and the admin listener (/metrics, /healthz). cmd/analytics, the test fixtures and
// cmd/bench-analytics all build the service here, so they run the same wiring.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit/auditpb"
	auditnats "github.com/campaignmesh/campaignmesh/internal/platform/audit/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn/authclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/lifecycle"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/usage"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/deadletters"
	"github.com/campaignmesh/campaignmesh/services/analytics/grpcapi"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// ServiceName is the analytics service's mesh identity and its name in audit records.
const ServiceName = "analytics"

// Config is everything the analytics service is built from. DefaultConfig holds the documented
// defaults (the flags of cmd/analytics).
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
	// NATS is the JetStream server the writer reads accepted events from and the API records
	// its queries on (the USAGE stream, internal/platform/usage).
	NATS natsjs.ClientFlags
	// ClickHouseAddr is ClickHouse's native protocol address, Database the analytics database.
	ClickHouseAddr, Database string
	// ClickHouseShards are the native addresses of the cluster's shards in shard order (the
	// first is ClickHouseAddr); none means one shard, ClickHouseAddr (Shards).
	ClickHouseShards []string
	// WriterIndex and WriterCount: this process is writer WriterIndex of WriterCount, which
	// own the stream's partitions p with p % WriterCount == WriterIndex.
	WriterIndex, WriterCount int
	// Roles are what this process runs (default AllRoles). Without the API it opens no gRPC
	// listener, only the admin one.
	Roles Roles
	// WriterUser owns the schema, inserts and runs event deletions; ReaderUser is the read-only
	// user of the query API. A password file, when named, is read by New and replaces Password.
	WriterUser, ReaderUser                 clickhouse.User
	WriterPasswordFile, ReaderPasswordFile string
	// Writer bounds the writer's inserts.
	Writer writer.Config
	// Limits are the query API's per-tenant limits and range bounds; Query the limits
	// ClickHouse enforces on every query.
	Limits analytics.Limits
	Query  clickhouse.QueryLimits
	// GracePeriod bounds how long a stop waits for calls in flight.
	GracePeriod time.Duration
	// Verifier, when set, checks callers' credentials instead of the auth service (tests and
	// benches that sign their own tokens); AuthAddr is then not dialed.
	Verifier grpcserver.Verifier
	// WrapStore, when set, wraps the query store (the bench records the queries it is asked).
	WrapStore func(analytics.Store) analytics.Store
	// WrapSink, when set, wraps the writer's sink: fault injection (writerfault) of tests and
	// of the chaos build of cmd/analytics, never of the normal binary.
	WrapSink func(writer.Sink) writer.Sink
	// PrivacyKeyFile is the mesh's privacy key (privacy.LoadKey): the writer hashes events'
	// user and anonymous ids with it to drop suppressed subjects' rows. Empty: it drops none.
	PrivacyKeyFile string
	// RetentionDays is the deployment's raw-event retention: the API role drops the months of
	// raw events entirely older than it; 0 keeps them. Tenants' own retentions come from their
	// privacy policies. Retention runs RetentionDelay after start, then every RetentionInterval.
	RetentionDays                     int
	RetentionInterval, RetentionDelay time.Duration
	// Erasure tunes the batched erasure of data subjects (dsr's ParticipantService, served
	// with the API).
	Erasure analytics.ErasureConfig
	// DeadLetters deletes an erased subject's dead letters; nil: the dead-letter stream
	// EVENTS_DLQ (services/analytics/deadletters).
	DeadLetters analytics.DeadLetters
}

// DefaultConfig returns the documented defaults. TLS files have none: they are required.
func DefaultConfig() Config {
	return Config{
		Listen: "127.0.0.1:7104", AdminListen: "127.0.0.1:9104", AuthAddr: "127.0.0.1:7101",
		NATS:           natsjs.ClientFlags{URL: "nats://127.0.0.1:14222", User: ServiceName},
		ClickHouseAddr: "127.0.0.1:19000", Database: "analytics", WriterCount: 1, Roles: AllRoles,
		WriterUser: clickhouse.User{Name: "analytics_writer"}, ReaderUser: clickhouse.User{Name: "analytics_reader"},
		Writer: writer.DefaultConfig, Limits: analytics.DefaultLimits, Query: clickhouse.DefaultQueryLimits,
		GracePeriod: grpcserver.DefaultGracePeriod, ConnectionAge: grpcserver.DefaultConnectionAge, Erasure: analytics.DefaultErasureConfig,
		RetentionInterval: DefaultRetentionInterval, RetentionDelay: DefaultRetentionDelay,
	}
}

// App is a built analytics service: connected, listening, not yet serving.
type App struct {
	*lifecycle.Base
	conn driver.Conn // the writer user's: schema, inserts, deletions
	// shardConns are the writer user's connections to every shard, in shard order (conn is
	// the first). The writer takes shard 0's sink until it takes one per shard.
	shardConns  []driver.Conn
	revocations *authn.RevocationList // nil with Config.Verifier
	audit       *auditnats.Sink
	writer      *writer.Writer
	server      *grpcserver.Server
	// retention is the API role's retention loop (nil without the API role).
	retention func(context.Context) error
	eraser    *analytics.Eraser // with the API: dsr's erasures
}

// New connects to NATS, ClickHouse (creating the schema) and the auth service, builds the
// query API and the writer, and opens both listeners: of these, only what Config.Roles names
// (a writer alone opens only the admin listener and needs no auth service). On an error
// everything opened so far is released.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (_ *App, err error) {
	a := &App{Base: lifecycle.New(logger)}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	var problems config.Problems
	cfg.CheckScaleOut(&problems)
	if err := problems.Err(); err != nil {
		return nil, err
	}
	certs, err := mtls.NewSource(cfg.TLS, logger)
	if err != nil {
		return nil, err
	}
	nc, js, err := cfg.NATS.Connect("analytics-writer")
	if err != nil {
		return nil, err
	}
	a.OnClose(nc.Close)
	writerUser, err := withPassword(cfg.WriterUser, cfg.WriterPasswordFile)
	if err != nil {
		return nil, err
	}
	readerUser, err := withPassword(cfg.ReaderUser, cfg.ReaderPasswordFile)
	if err != nil {
		return nil, err
	}
	if err := a.openShards(ctx, cfg, writerUser); err != nil {
		return nil, err
	}
	view, err := a.watchPrivacy(ctx, js, logger)
	if err != nil {
		return nil, err
	}
	// Billing counts from the USAGE stream: every answered public query (the API records it
	// before its answer leaves) and every accepted event (the writer records each batch before
	// acknowledging it). The first process to start creates the stream.
	if _, err := usage.EnsureStream(ctx, js); err != nil {
		return nil, err
	}
	if cfg.Roles.Writer {
		opts, err := suppressionOption(cfg, view, logger)
		if err != nil {
			return nil, err
		}
		opts = append(opts, writer.WithAcceptedUsage())
		a.writer = newWriter(js, a.shardConns, cfg, logger, a.Registry(), opts...)
	}
	if !cfg.Roles.API { // a writer alone: no query API, only /metrics and /healthz
		if err := a.ListenAdmin(cfg.AdminListen); err != nil {
			return nil, err
		}
		if err := a.ListenHealth(cfg.HealthListen); err != nil {
			return nil, err
		}
		return a, nil
	}
	if a.retention, err = a.retentionTask(cfg, view, logger); err != nil {
		return nil, err
	}
	reader, err := clickhouse.OpenReader(ctx, cfg.ClickHouseAddr, cfg.Database, readerUser)
	if err != nil {
		return nil, err
	}
	a.OnClose(func() { _ = reader.Close() })
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
	queries := clickhouse.NewQueries(reader, a.conn, cfg.Query).WithShards(a.shardConns).WithLogger(logger)
	var store analytics.Store = queries
	if cfg.WrapStore != nil {
		store = cfg.WrapStore(store)
	}
	api := grpcapi.NewServer(analytics.NewService(store, cfg.Limits)).WithUsage(usage.NewRecorder(js, usage.MeterAnalyticsQueries)).
		WithUsageCounts(analytics.NewUsage(queries))

	a.server = grpcserver.New(
		grpcserver.WithService(ServiceName),
		grpcserver.WithAuditor(a.audit),
		grpcserver.WithLogger(logger),
		grpcserver.WithTLS(certs.ServerConfig()),
		grpcserver.WithVerifier(verifier),
		grpcserver.WithMetrics(a.Registry()),
		grpcserver.WithGracePeriod(cfg.GracePeriod),
		cfg.ConnectionAge.Option(),
		grpcserver.WithInnermost(api.UnaryInterceptor()),
	)
	analyticsv1.RegisterAnalyticsServiceServer(a.server.GRPC(), api)
	// dsr's participant: erasures fence the writers of every process through NATS.
	fencer, err := natsjs.NewFencer(ctx, js)
	if err != nil {
		return nil, err
	}
	deadLetters := cfg.DeadLetters
	if deadLetters == nil {
		deadLetters = deadletters.NewStore(js)
	}
	a.eraser = analytics.NewEraser(queries, fencer, deadLetters, cfg.Erasure, logger, a.Registry()).WithEventStream(eventStream{js})
	dsrv1.RegisterParticipantServiceServer(a.server.GRPC(), grpcapi.NewParticipantServer(analytics.NewParticipant(queries, a.eraser)))

	if err := a.Listen(cfg.Listen, cfg.AdminListen); err != nil {
		return nil, err
	}
	if err := a.ListenHealth(cfg.HealthListen); err != nil {
		return nil, err
	}
	return a, nil
}

// newWriter builds the writer role into the events tables of every shard (conns, in shard
// order) over the writer user's connections, each sink wrapped by Config.WrapSink when set.
func newWriter(js jetstream.JetStream, conns []driver.Conn, cfg Config, logger *slog.Logger, reg prometheus.Registerer, opts ...writer.Option) *writer.Writer {
	sinks := make([]writer.Sink, len(conns))
	for i, conn := range conns {
		sinks[i] = clickhouse.NewEventSink(conn)
		if cfg.WrapSink != nil {
			sinks[i] = cfg.WrapSink(sinks[i])
		}
	}
	wcfg := cfg.Writer
	wcfg.Index, wcfg.Count = cfg.WriterIndex, cfg.WriterCount
	// The same process restarted (same host, same admin address) takes its lease back at once;
	// a second process started by mistake with the same index waits, and never writes beside it.
	host, _ := os.Hostname()
	wcfg.Identity = host + " " + cfg.AdminListen
	return writer.New(js, sinks, wcfg, logger, reg, opts...)
}

// withPassword is u with its password read from file, when one is named.
func withPassword(u clickhouse.User, file string) (clickhouse.User, error) {
	if file == "" {
		return u, nil
	}
	pw, err := config.ReadSecret(file)
	if err != nil {
		return u, fmt.Errorf("clickhouse user %s: %w", u.Name, err)
	}
	u.Password = pw
	return u, nil
}

// Run serves the query API, runs the writer, the revocation list and the admin listener until
// ctx ends (then stops gracefully and returns nil) or one of them fails: then the others are
// stopped and its error is returned. Call it once; Close afterwards.
func (a *App) Run(ctx context.Context) error {
	var tasks []func(context.Context) error
	if a.writer != nil {
		tasks = append(tasks, a.writer.Run)
	}
	if a.eraser != nil {
		tasks = append(tasks, a.eraser.Run)
	}
	if a.revocations != nil {
		tasks = append(tasks, a.revocations.Run, a.audit.Run)
	}
	if a.retention != nil {
		tasks = append(tasks, a.retention)
	}
	return a.Serve(ctx, a.server, tasks...)
}

// eventStream is the event stream an erasure waits on (analytics.EventStream).
type eventStream struct{ js jetstream.JetStream }

func (s eventStream) LastSeq(ctx context.Context) (uint64, error) { return writer.StreamSeq(ctx, s.js) }

func (s eventStream) Drained(ctx context.Context, seq uint64) (bool, error) {
	return writer.Drained(ctx, s.js, seq)
}
