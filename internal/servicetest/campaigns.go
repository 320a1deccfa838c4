package servicetest

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
	"github.com/campaignmesh/campaignmesh/services/campaigns/app"
)

// CampaignsOptions say how StartCampaigns builds the campaigns service. The zero value is a
// fresh service that knows no auth or analytics service: set Verifier (or AuthAddr) so that
// calls can be authenticated.
type CampaignsOptions struct {
	// CA issues the service's mesh certificate; nil: a new CA. Clients dial with certificates
	// of it (Campaigns.Client), and so must auth and analytics when AuthAddr or AnalyticsAddr
	// are set.
	CA *mtls.CA
	// Database is the PostgreSQL URL of the campaigns database; empty: a fresh database,
	// dropped when the test ends.
	Database string
	// AuthAddr is the auth service (credentials, revocations, audit delivery); empty: an
	// address where nothing listens, so audit records stay in the outbox.
	AuthAddr string
	// Verifier, when set, checks credentials instead of auth (e.g. meshtest.Issuer's).
	Verifier grpcserver.Verifier
	// Spend is the campaigns' spend; nil: nothing was spent (the analytics adapter has its own
	// tests).
	Spend campaigns.SpendSource
	// Logger receives the service's logs; nil: discarded.
	Logger *slog.Logger
	// Config, when set, makes last changes to the configuration.
	Config func(*app.Config)
}

// Campaigns is a campaigns service under test, built by its app package as cmd/campaigns builds
// it and serving on loopback until the test ends.
type Campaigns struct {
	*app.App
	// CA issued the service's certificate.
	CA *mtls.CA
}

// StartCampaigns builds the campaigns service through its app package from CampaignsConfig and
// runs it until the test ends. Run's error, if any, fails the test.
func StartCampaigns(tb testing.TB, o CampaignsOptions) *Campaigns {
	tb.Helper()
	cfg := CampaignsConfig(tb, &o)
	a, err := app.New(context.Background(), cfg, orDiscard(o.Logger))
	if err != nil {
		tb.Fatalf("build campaigns: %v", err)
	}
	run(tb, "campaigns", a)
	return &Campaigns{App: a, CA: o.CA}
}

// CampaignsConfig is the configuration StartCampaigns builds the service from: o's database (a
// fresh one when empty), loopback listeners on free ports, a certificate of o.CA, o's auth
// address, verifier and spend. It fills in o what it made (the CA, the database).
func CampaignsConfig(tb testing.TB, o *CampaignsOptions) app.Config {
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
	cfg.AuthAddr, cfg.AnalyticsAddr = o.AuthAddr, nowhere(tb)
	if cfg.AuthAddr == "" {
		cfg.AuthAddr = nowhere(tb)
	}
	cfg.Verifier, cfg.Spend = o.Verifier, o.Spend
	if cfg.Spend == nil {
		cfg.Spend = zeroSpend{}
	}
	if o.Config != nil {
		o.Config(&cfg)
	}
	return cfg
}

// Client returns a client of the service with the mesh identity of service (e.g. "gateway"),
// closed when the test ends.
func (c *Campaigns) Client(tb testing.TB, service string) campaignsv1.CampaignServiceClient {
	tb.Helper()
	return campaignsv1.NewCampaignServiceClient(Dial(tb, c.Addr(), c.CA, service, app.ServiceName))
}

// zeroSpend answers that nothing was spent.
type zeroSpend struct{}

func (zeroSpend) Spend(context.Context, string, []string, time.Time, time.Time) ([]campaigns.Spend, error) {
	return nil, nil
}

// nowhere is a loopback address where nothing listens: a port that was free a moment ago.
func nowhere(tb testing.TB) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}
