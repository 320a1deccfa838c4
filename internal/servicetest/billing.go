package servicetest

import (
	"context"
	"log/slog"
	"testing"

	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/services/billing/app"
)

// BillingOptions say how StartBilling builds the billing service. The zero value is a fresh
// service on an embedded NATS server of its own that knows no auth service: set Verifier (or
// AuthAddr) so that calls can be authenticated.
type BillingOptions struct {
	// CA issues the service's mesh certificate; nil: a new CA.
	CA *mtls.CA
	// Database is the PostgreSQL URL of the billing database; empty: a fresh database.
	Database string
	// NATSURL is the JetStream server; empty: an embedded server of the test's, without users.
	NATSURL string
	// AuthAddr is the auth service; empty: an address where nothing listens.
	AuthAddr string
	// Verifier, when set, checks credentials instead of auth.
	Verifier grpcserver.Verifier
	// AnalyticsAddr and DeliveryAddr are the usage sources; empty: none (their meters stay 0).
	AnalyticsAddr, DeliveryAddr string
	// Logger receives the service's logs; nil: discarded.
	Logger *slog.Logger
	// Config, when set, makes last changes to the configuration.
	Config func(*app.Config)
}

// Billing is a billing service under test, built by its app package as cmd/billing builds it
// and serving on loopback until the test ends.
type Billing struct {
	*app.App
	// CA issued the service's certificate.
	CA *mtls.CA
	// NATSURL is the JetStream server it uses.
	NATSURL string
}

// StartBilling builds the billing service through its app package from BillingConfig and runs
// it until the test ends. Run's error, if any, fails the test.
func StartBilling(tb testing.TB, o BillingOptions) *Billing {
	tb.Helper()
	cfg := BillingConfig(tb, &o)
	a, err := app.New(context.Background(), cfg, orDiscard(o.Logger))
	if err != nil {
		tb.Fatalf("build billing: %v", err)
	}
	run(tb, "billing", a)
	return &Billing{App: a, CA: o.CA, NATSURL: o.NATSURL}
}

// BillingConfig is the configuration StartBilling builds the service from: o's database and
// NATS (fresh ones when empty), loopback
// listeners on free ports, a certificate of o.CA, o's auth address and verifier.
func BillingConfig(tb testing.TB, o *BillingOptions) app.Config {
	tb.Helper()
	if o.CA == nil {
		o.CA = mtlstest.NewCA(tb)
	}
	if o.Database == "" {
		o.Database = pgtest.NewDatabase(tb)
	}
	if o.NATSURL == "" {
		o.NATSURL = natstest.Start(tb)
	}
	cfg := app.DefaultConfig()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.PostgresURL = o.Database
	cfg.TLS = mtlstest.Files(tb, o.CA, app.ServiceName)
	cfg.NATS = natsjs.ClientFlags{URL: o.NATSURL}
	cfg.AuthAddr = o.AuthAddr
	if cfg.AuthAddr == "" {
		cfg.AuthAddr = nowhere(tb)
	}
	cfg.Verifier = o.Verifier
	cfg.AnalyticsAddr, cfg.DeliveryAddr = o.AnalyticsAddr, o.DeliveryAddr
	if o.Config != nil {
		o.Config(&cfg)
	}
	return cfg
}

// Client returns a client of the service with the mesh identity of service (e.g. "gateway"),
// closed when the test ends.
func (b *Billing) Client(tb testing.TB, service string) billingv1.BillingServiceClient {
	tb.Helper()
	return billingv1.NewBillingServiceClient(Dial(tb, b.Addr(), b.CA, service, app.ServiceName))
}
