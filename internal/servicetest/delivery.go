package servicetest

import (
	"context"
	"log/slog"
	"testing"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/services/delivery/app"
)

// DeliveryOptions say how StartDelivery builds the delivery service. The zero value is a fresh
// service that knows no auth service: set Verifier (or AuthAddr) so that calls can be
// authenticated.
type DeliveryOptions struct {
	// CA issues the service's mesh certificate; nil: a new CA.
	CA *mtls.CA
	// Database is the PostgreSQL URL of the delivery database; empty: a fresh database,
	// dropped when the test ends.
	Database string
	// AuthAddr is the auth service (credentials, revocations, audit delivery); empty: an
	// address where nothing listens, so audit records stay in the outbox.
	AuthAddr string
	// Verifier, when set, checks credentials instead of auth.
	Verifier grpcserver.Verifier
	// AnalyticsAddr is the analytics service (segments' behaviour conditions); empty: none.
	AnalyticsAddr string
	// Logger receives the service's logs; nil: discarded.
	Logger *slog.Logger
	// Config, when set, makes last changes to the configuration.
	Config func(*app.Config)
}

// Delivery is a delivery service under test, built by its app package as cmd/delivery builds
// it and serving on loopback until the test ends.
type Delivery struct {
	*app.App
	// CA issued the service's certificate.
	CA *mtls.CA
}

// StartDelivery builds the delivery service through its app package from DeliveryConfig and
// runs it until the test ends. Run's error, if any, fails the test.
func StartDelivery(tb testing.TB, o DeliveryOptions) *Delivery {
	tb.Helper()
	cfg := DeliveryConfig(tb, &o)
	a, err := app.New(context.Background(), cfg, orDiscard(o.Logger))
	if err != nil {
		tb.Fatalf("build delivery: %v", err)
	}
	run(tb, "delivery", a)
	return &Delivery{App: a, CA: o.CA}
}

// DeliveryConfig is the configuration StartDelivery builds the service from: o's database (a
// fresh one when empty), loopback listeners on free ports, a certificate of o.CA, o's auth
// address and verifier. It fills in o what it made (the CA, the database).
func DeliveryConfig(tb testing.TB, o *DeliveryOptions) app.Config {
	tb.Helper()
	if o.CA == nil {
		o.CA = mtlstest.NewCA(tb)
	}
	if o.Database == "" {
		o.Database = pgtest.NewDatabase(tb)
	}
	cfg := app.DefaultConfig()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.PostgresURL = o.Database
	cfg.TLS = mtlstest.Files(tb, o.CA, app.ServiceName)
	cfg.AuthAddr = o.AuthAddr
	if cfg.AuthAddr == "" {
		cfg.AuthAddr = nowhere(tb)
	}
	cfg.Verifier = o.Verifier
	cfg.AnalyticsAddr = o.AnalyticsAddr
	if o.Config != nil {
		o.Config(&cfg)
	}
	return cfg
}

// Client returns a client of the service with the mesh identity of service (e.g. "gateway"),
// closed when the test ends.
func (d *Delivery) Client(tb testing.TB, service string) deliveryv1.DeliveryServiceClient {
	tb.Helper()
	return deliveryv1.NewDeliveryServiceClient(Dial(tb, d.Addr(), d.CA, service, app.ServiceName))
}
