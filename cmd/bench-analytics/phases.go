package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	"github.com/campaignmesh/campaignmesh/internal/benchdata"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/app"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

// env is what the query and freshness phases share.
type env struct {
	files   func(svc string) mtls.Files
	gateway *mtls.Source // the caller's identity: the gateway forwards end users' calls
	pub     ed25519.PublicKey
	priv    ed25519.PrivateKey
	chAddr  string
	chUser  clickhouse.User
	js      jetstream.JetStream // the embedded NATS the writer reads and ingest publishes to
	client  analyticsv1.AnalyticsServiceClient
	sent    *recorder // what the service sent to ClickHouse
}

// token signs a JWT for tenant with role, as the auth service would.
func (e *env) token(tenant string, role rbac.Role) (string, error) {
	now := time.Now()
	return authn.Sign(authn.Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: authn.Issuer, Audience: jwt.ClaimStrings{authn.Audience},
		Subject: "bench-" + string(role), IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))},
		TenantID: tenant, Role: string(role)}, "k", e.priv)
}

func (e *env) as(ctx context.Context, tenant string, role rbac.Role) (context.Context, error) {
	tok, err := e.token(tenant, role)
	if err != nil {
		return nil, err
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), nil
}

func (b *bench) run(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "bench-analytics-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	progress("issuing certificates")
	if _, err := mtls.DevPKI(dir, []string{"analytics", "ingest", "gateway"}); err != nil {
		return err
	}
	e := &env{files: func(svc string) mtls.Files {
		return mtls.Files{Cert: filepath.Join(dir, svc+".pem"), Key: filepath.Join(dir, svc+"-key.pem"), CA: filepath.Join(dir, "ca.pem")}
	}}
	if e.gateway, err = mtls.NewSource(e.files("gateway"), nil); err != nil {
		return err
	}
	if e.pub, e.priv, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return err
	}

	e.chAddr = os.Getenv("CM_CLICKHOUSE_ADDR")
	if e.chAddr == "" {
		e.chAddr = "127.0.0.1:19000"
	}
	if e.chUser, err = clickhouse.EnvUser("CM_CLICKHOUSE"); err != nil {
		return err
	}
	d, err := b.prepare(ctx, e.chAddr)
	if err != nil {
		return err
	}

	progress("starting embedded NATS (JetStream, file storage, fsync always) and the analytics service over mTLS: API and writer (database %s)", b.cfg.database)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "nats"), SyncAlways: true, NoLog: true, NoSigs: true})
	if err != nil {
		return err
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("nats not ready")
	}
	nc, js, err := natsjs.Connect(ns.ClientURL(), "bench")
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := natsjs.EnsureStreams(ctx, js, natsjs.DefaultStream); err != nil {
		return err
	}
	e.js = js
	// A database kept from an earlier run holds that run's stream sequences; the writer offsets
	// a new stream's sequences past them (writer_epochs), so nothing is needed here.
	svc, err := b.startAnalytics(ctx, e, ns.ClientURL())
	if err != nil {
		return err
	}
	defer svc.stop()
	conn, err := grpc.NewClient(svc.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(e.gateway.ClientConfig("analytics"))))
	if err != nil {
		return err
	}
	defer conn.Close()
	e.client = analyticsv1.NewAnalyticsServiceClient(conn)

	direct, err := clickhouse.Open(ctx, e.chAddr, b.cfg.database, e.chUser)
	if err != nil {
		return err
	}
	defer direct.Close()
	stats, err := b.queries(ctx, e, d, direct)
	if err != nil {
		return err
	}
	if err := b.usersError(ctx, direct, d); err != nil {
		return err
	}
	fresh, err := b.freshness(ctx, e)
	if err != nil {
		return err
	}
	b.summary(stats, fresh)
	return nil
}

// service is the analytics service under the bench, running until stop.
type service struct {
	*app.App
	stop func()
}

// startAnalytics builds the analytics service as cmd/analytics does (its app package) over the
// bench's database, as the bench's ClickHouse user for both roles, with the writer reading
// natsURL, tokens checked against the bench's key, and every query it sends recorded in e.sent.
func (b *bench) startAnalytics(ctx context.Context, e *env, natsURL string) (*service, error) {
	cfg := app.DefaultConfig()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.TLS = e.files("analytics")
	cfg.NATS = natsjs.ClientFlags{URL: natsURL}
	cfg.ClickHouseAddr, cfg.Database = e.chAddr, b.cfg.database
	cfg.WriterUser, cfg.ReaderUser = e.chUser, e.chUser
	cfg.Verifier = authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": e.pub})}
	cfg.WrapStore = func(s analytics.Store) analytics.Store {
		e.sent = &recorder{Store: s}
		return e.sent
	}
	a, err := app.New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(rctx) }()
	return &service{App: a, stop: func() {
		cancel()
		if err := <-done; err != nil {
			progress("analytics service stopped: %v", err)
		}
		a.Close()
	}}, nil
}

// prepare makes sure the database holds the data set: reused with -keep when complete,
// otherwise dropped and loaded (benchdata.Prepare).
func (b *bench) prepare(ctx context.Context, addr string) (dataset, error) {
	return benchdata.Prepare(ctx, addr, b.cfg.data(), b.cfg.database, b.cfg.keep, b.add)
}
