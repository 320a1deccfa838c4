package servicetest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/services/analytics/app"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

// AnalyticsOptions say how StartAnalytics builds the service.
type AnalyticsOptions struct {
	// CA issues the service's mesh certificate (required; clients dial with certificates of it).
	CA *mtls.CA
	// Verifier checks callers' credentials (required; e.g. authn.Verifier over static keys).
	Verifier grpcserver.Verifier
	// Database is the ClickHouse database; empty: a fresh one, dropped when the test ends.
	Database string
	// Logger receives the service's logs; nil: discarded.
	Logger *slog.Logger
	// Config, when set, makes last changes to the configuration.
	Config func(*app.Config)
}

// StartAnalytics builds the analytics service through its app package, as cmd/analytics does,
// from AnalyticsConfig, and runs it until the test ends. Run's error, if any, fails the test.
func StartAnalytics(tb testing.TB, o AnalyticsOptions) *app.App {
	tb.Helper()
	a, err := app.New(context.Background(), AnalyticsConfig(tb, o), orDiscard(o.Logger))
	if err != nil {
		tb.Fatalf("build analytics: %v", err)
	}
	run(tb, "analytics", a)
	return a
}

// AnalyticsConfig is the configuration StartAnalytics builds the service from: the test
// ClickHouse server (as the writer and reader users), an embedded NATS server holding the event
// streams, loopback listeners on free ports, a certificate of o.CA and o.Verifier.
func AnalyticsConfig(tb testing.TB, o AnalyticsOptions) app.Config {
	tb.Helper()
	url := natstest.Start(tb)
	nc, js, err := natsjs.Connect(url, "meshtest")
	if err != nil {
		tb.Fatal(err)
	}
	defer nc.Close()
	if err := natsjs.EnsureStreams(context.Background(), js, natsjs.DefaultStream); err != nil {
		tb.Fatal(err)
	}
	cfg := app.DefaultConfig()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.TLS = mtlstest.Files(tb, o.CA, app.ServiceName)
	cfg.NATS = natsjs.ClientFlags{URL: url}
	cfg.ClickHouseAddr, cfg.Database = chtest.Addr(), o.Database
	if cfg.Database == "" {
		cfg.Database = chtest.NewDatabase(tb)
	}
	cfg.WriterUser, cfg.ReaderUser = clickhouse.User(chtest.Writer(tb)), clickhouse.User(chtest.Reader(tb))
	cfg.Verifier = o.Verifier
	if o.Config != nil {
		o.Config(&cfg)
	}
	return cfg
}
