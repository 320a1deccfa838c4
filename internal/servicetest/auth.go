package servicetest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"sync"
	"testing"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/auth"
	"github.com/campaignmesh/campaignmesh/services/auth/app"
)

// AuthOptions say how StartAuth builds the auth service. The zero value is a fresh service.
type AuthOptions struct {
	// CA issues the service's mesh certificate; nil: a new CA. Clients dial with certificates
	// of it (Auth.Client).
	CA *mtls.CA
	// Database is the PostgreSQL URL of the auth database; empty: a fresh database, dropped
	// when the test ends.
	Database string
	// Listen is the gRPC address; empty: a free loopback port.
	Listen string
	// KEKs encrypt the signing keys at rest; nil: a random key.
	KEKs *auth.KeyEncryptionKeys
	// Logger receives the service's logs; nil: discarded.
	Logger *slog.Logger
	// Config, when set, makes last changes to the configuration.
	Config func(*app.Config)
}

// Auth is an auth service under test, built by its app package as cmd/auth builds it and
// serving on loopback until the test ends (or Stop).
type Auth struct {
	*app.App
	// CA issued the service's certificate.
	CA *mtls.CA
	// Options build the same service again — its database, address, keys and CA — with
	// StartAuth once this one is stopped: a restart.
	Options AuthOptions

	stop   func()
	mu     sync.Mutex
	client authv1.AuthServiceClient
}

// StartAuth builds the auth service through its app package from AuthConfig and runs it until
// the test ends. Run's error, if any, fails the test.
func StartAuth(tb testing.TB, o AuthOptions) *Auth {
	tb.Helper()
	cfg := AuthConfig(tb, &o)
	a, err := app.New(context.Background(), cfg, orDiscard(o.Logger))
	if err != nil {
		tb.Fatalf("build auth: %v", err)
	}
	o.Listen = a.Addr()
	return &Auth{App: a, CA: o.CA, Options: o, stop: run(tb, "auth", a)}
}

// AuthConfig is the configuration StartAuth builds the service from: o's database (a fresh one
// when empty), loopback listeners (o.Listen, else free ports), a certificate of o.CA and o's
// KEKs. It fills in o what it made (the CA, the database, the KEKs), so o builds the same
// service again.
func AuthConfig(tb testing.TB, o *AuthOptions) app.Config {
	tb.Helper()
	if o.CA == nil {
		o.CA = mtlstest.NewCA(tb)
	}
	if o.Database == "" {
		o.Database = pgtest.NewDatabase(tb)
	}
	if o.KEKs == nil {
		raw := make([]byte, auth.KEKSize)
		_, _ = rand.Read(raw)
		keks, err := auth.ParseKeyEncryptionKeys("meshtest:" + base64.StdEncoding.EncodeToString(raw))
		if err != nil {
			tb.Fatal(err)
		}
		o.KEKs = keks
	}
	cfg := app.DefaultConfig()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	if o.Listen != "" {
		cfg.Listen = o.Listen
	}
	cfg.PostgresURL, cfg.KEKs = o.Database, o.KEKs
	cfg.TLS = mtlstest.Files(tb, o.CA, app.ServiceName)
	if o.Config != nil {
		o.Config(&cfg)
	}
	return cfg
}

// Stop stops serving and releases the service (the database stays: StartAuth(tb, a.Options)
// starts it again). It is safe to call more than once.
func (a *Auth) Stop() { a.stop() }

// Client returns a client of the service with the mesh identity of service (e.g. "gateway"),
// closed when the test ends.
func (a *Auth) Client(tb testing.TB, service string) authv1.AuthServiceClient {
	tb.Helper()
	return authv1.NewAuthServiceClient(Dial(tb, a.Addr(), a.CA, service, app.ServiceName))
}

// Login logs in through the API, as the gateway forwards a login, and returns the access token.
func (a *Auth) Login(tb testing.TB, tenantSlug, email, password string) string {
	tb.Helper()
	a.mu.Lock()
	if a.client == nil {
		a.client = a.Client(tb, "gateway")
	}
	c := a.client
	a.mu.Unlock()
	resp, err := c.Login(context.Background(), &authv1.LoginRequest{Tenant: tenantSlug, Email: email, Password: password})
	if err != nil {
		tb.Fatalf("login %s/%s: %v", tenantSlug, email, err)
	}
	return resp.GetAccessToken()
}

// AuthTenant is a tenant made by NewTenant, with its admin and the admin's access token.
type AuthTenant struct {
	Tenant   auth.Tenant
	Admin    auth.User
	Password string
	Token    string
}

// NewTenant creates an active tenant with slug and its admin (admin@<slug>.example) through the
// domain, and logs the admin in through the API.
func (a *Auth) NewTenant(tb testing.TB, slug string) AuthTenant {
	tb.Helper()
	ctx := context.Background()
	t, err := a.Service().CreateTenant(ctx, slug, slug)
	if err != nil {
		tb.Fatalf("create tenant %s: %v", slug, err)
	}
	const password = "meshtest admin password"
	admin, err := a.Service().CreateUser(ctx, &authn.Principal{TenantID: t.ID, Permissions: rbac.Admin.Permissions()},
		auth.User{Email: "admin@" + slug + ".example", Role: rbac.Admin}, password)
	if err != nil {
		tb.Fatalf("create admin of %s: %v", slug, err)
	}
	return AuthTenant{Tenant: t, Admin: admin, Password: password, Token: a.Login(tb, slug, admin.Email, password)}
}
