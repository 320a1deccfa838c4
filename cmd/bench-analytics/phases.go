package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
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
// otherwise dropped and loaded.
func (b *bench) prepare(ctx context.Context, addr string) (dataset, error) {
	progress("connecting to ClickHouse at %s", addr)
	user, err := clickhouse.EnvUser("CM_CLICKHOUSE")
	if err != nil {
		return dataset{}, err
	}
	admin, err := ch.Open(&ch.Options{Addr: []string{addr}, Auth: ch.Auth{Username: user.Name, Password: user.Password}, DialTimeout: 5 * time.Second})
	if err == nil {
		err = admin.Ping(ctx)
	}
	if err != nil {
		return dataset{}, fmt.Errorf("clickhouse at %s (run scripts/devenv.sh up): %w", addr, err)
	}
	defer admin.Close()
	var version string
	_ = admin.QueryRow(ctx, "SELECT version()").Scan(&version)
	db := b.cfg.database
	d := plan(b.cfg, time.Now())
	want := d.rows()

	fmt.Printf("\nData set (seed %d; ClickHouse %s, database %s)\n", b.cfg.seed, version, db)
	if b.cfg.keep {
		if err := admin.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
			return d, err
		}
		conn, err := clickhouse.Open(ctx, addr, db, user)
		if err != nil {
			return d, err
		}
		end, ok, err := reusable(ctx, conn, b.cfg, want)
		conn.Close()
		if err != nil {
			return d, err
		}
		if ok {
			d = plan(b.cfg, end)
			progress("-keep: %s holds this data set (%d rows, ending %s, %s ago); not loading", db, want,
				end.Format(time.RFC3339), time.Since(end).Round(time.Minute))
			b.add("data set: rows (reused with -keep)", float64(want), "rows", fmt.Sprintf("(%d tenants)", len(d.Tenants)))
			return d, nil
		}
		progress("-keep: %s does not hold this data set complete; loading it", db)
	}
	if err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+db); err != nil {
		return d, err
	}
	if err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		return d, err
	}
	conn, err := clickhouse.Open(ctx, addr, db, user)
	if err != nil {
		return d, err
	}
	defer conn.Close()
	big := d.Tenants[0]
	progress("loading %d events: tenant %s %d events, %d campaigns, %d users, %d days ending %s; %d small tenants of %d; %d at once",
		want, big.ID, big.Events, len(big.Campaigns), big.Users, d.Days, d.End.Format(time.RFC3339), len(d.Tenants)-1, smallEvents, loaders())
	took, err := load(ctx, conn, d)
	if err != nil {
		return d, err
	}
	progress("loaded %d rows in %s (%.0f rows/s)", want, took.Round(time.Millisecond), float64(want)/took.Seconds())
	b.add("data set: rows loaded", float64(want), "rows", fmt.Sprintf("(%d tenants; big: %d events, %d campaigns, %d users)", len(d.Tenants), big.Events, len(big.Campaigns), big.Users))
	b.add("load: INSERT … SELECT from numbers()", took.Seconds(), "s", fmt.Sprintf("(%.0f rows/s, %d inserts at once, 1M-row blocks)", float64(want)/took.Seconds(), loaders()))

	// The materialized view fired on every block: the rollup counts every event.
	var raw, rolled, commits uint64
	if err := conn.QueryRow(ctx, "SELECT countIf(tenant_id != ''), countIf(tenant_id = '') FROM events").Scan(&raw, &commits); err != nil {
		return d, err
	}
	if err := conn.QueryRow(ctx, "SELECT toUInt64(countMerge(events)) FROM events_hourly").Scan(&rolled); err != nil {
		return d, err
	}
	b.add("load: count() of events", float64(raw), "rows", fmt.Sprintf("(and %d commit rows, one per %d-event block, partition and month)", commits, batchRows()))
	b.add("load: sum of countMerge(events) of events_hourly", float64(rolled), "rows", "(the materialized view's rollup)")
	if raw != uint64(want) || rolled != raw {
		return d, fmt.Errorf("loaded %d rows, events holds %d, the rollup counts %d", want, raw, rolled)
	}

	// Merge the inserted parts as background merges would in a while, so every run (and a
	// -keep re-run) queries the same layout: one part of events, one per month of the rollup.
	start := time.Now()
	for _, t := range []string{"events_local", "events_hourly_local"} {
		if err := optimize(ctx, conn, t); err != nil {
			return d, err
		}
	}
	var parts, partitions, hourlyRows uint64
	if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(table, partition) FROM system.parts WHERE database = currentDatabase() AND table IN ('events_local', 'events_hourly_local') AND active").Scan(&parts, &partitions); err != nil {
		return d, err
	}
	if parts != partitions {
		return d, fmt.Errorf("after OPTIMIZE … FINAL, events and events_hourly still hold %d parts in %d partitions", parts, partitions)
	}
	_ = conn.QueryRow(ctx, "SELECT count() FROM events_hourly").Scan(&hourlyRows)
	b.add("load: OPTIMIZE TABLE … FINAL (events_local, events_hourly_local)", time.Since(start).Seconds(), "s", fmt.Sprintf("(one part per partition; events_hourly: %d rows)", hourlyRows))
	if err := conn.Exec(ctx, metaTable); err != nil {
		return d, err
	}
	// A native batch: 18.16 does not answer clickhouse-go's INSERT … VALUES with arguments.
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO bench_dataset (seed, events, small_tenants, campaigns, days, end_time, row_count)")
	if err == nil {
		err = batch.Append(b.cfg.seed, b.cfg.events, int32(b.cfg.smallTenants), int32(b.cfg.campaigns), int32(b.cfg.days), d.End, uint64(want))
	}
	if err == nil {
		err = batch.Send()
	}
	if err != nil {
		return d, fmt.Errorf("record the data set: %w", err)
	}
	return d, nil
}

// optimize merges table into one part per partition. ClickHouse does nothing (and says
// nothing) while background merges hold the parts, hence optimize_throw_if_noop and retries.
func optimize(ctx context.Context, conn driver.Conn, table string) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		err := conn.Exec(ch.Context(ctx, ch.WithSettings(ch.Settings{"optimize_throw_if_noop": 1})), "OPTIMIZE TABLE "+table+" FINAL")
		var ex *ch.Exception
		if err == nil || !errors.As(err, &ex) || ex.Code != 388 || time.Now().After(deadline) { // 388: CANNOT_ASSIGN_OPTIMIZE
			if err != nil {
				return fmt.Errorf("optimize %s: %w", table, err)
			}
			return nil
		}
		time.Sleep(time.Second)
	}
}
