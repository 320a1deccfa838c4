package grpcapi_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/auth"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
	"github.com/campaignmesh/campaignmesh/services/campaigns/postgres"
)

const password = "a long enough password"

// env is a small mesh in one process, every hop over real mTLS with certificates from one
// test CA: the real auth service (own database) issues tokens, verifies API keys and keeps
// the audit log; the campaigns service (own database) verifies credentials with auth's
// published keys, records audited calls in its outbox and delivers them to auth — both built
// by their app packages, as their commands build them. Clients call campaigns with the
// gateway's identity.
type env struct {
	ca      *mtls.CA
	authSvc *auth.Service
	auth    authv1.AuthServiceClient
	store   *postgres.Store
	svc     *campaigns.Service
	spend   *zeroSpend
	outbox  *auditpg.Outbox
	addr    string
	conn    *grpc.ClientConn
	client  campaignsv1.CampaignServiceClient
}

// zeroSpend answers that nothing was spent: pacing works without analytics here (the analytics
// adapter has its own tests over mTLS).
type zeroSpend struct{}

func (zeroSpend) Spend(context.Context, string, []string, time.Time, time.Time) ([]campaigns.Spend, error) {
	return nil, nil
}

func newEnv(t *testing.T) *env {
	t.Helper()
	a := servicetest.StartAuth(t, servicetest.AuthOptions{})
	e := &env{ca: a.CA, authSvc: a.Service(), spend: &zeroSpend{}}
	e.auth = a.Client(t, "gateway")
	c := servicetest.StartCampaigns(t, servicetest.CampaignsOptions{CA: a.CA, AuthAddr: a.Addr(), Spend: e.spend})
	e.store, e.svc, e.outbox, e.addr = c.Store(), c.Service(), c.Outbox(), c.Addr()
	e.conn = dial(t, e.addr, e.ca, "gateway", "campaigns")
	e.client = campaignsv1.NewCampaignServiceClient(e.conn)
	return e
}

// dial connects to a mesh service with the identity from.
func dial(t *testing.T, addr string, ca *mtls.CA, from, to string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(mtlstest.Source(t, ca, from).ClientConfig(to))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func as(token string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
}

// tenantFixture is a tenant with one logged-in user per role and an API key that may read
// campaigns.
type tenantFixture struct {
	tenant auth.Tenant
	users  map[rbac.Role]auth.User
	tokens map[rbac.Role]string
	apiKey string
}

func (f tenantFixture) principal() *authn.Principal {
	return &authn.Principal{TenantID: f.tenant.ID, Subject: f.users[rbac.Manager].ID, Role: rbac.Manager, Permissions: rbac.Manager.Permissions()}
}

func (e *env) tenantWithRoles(t *testing.T, slug string) tenantFixture {
	t.Helper()
	ctx := context.Background()
	tn, err := e.authSvc.CreateTenant(ctx, slug, slug)
	if err != nil {
		t.Fatal(err)
	}
	f := tenantFixture{tenant: tn, users: map[rbac.Role]auth.User{}, tokens: map[rbac.Role]string{}}
	for _, r := range rbac.Roles() {
		if !r.TenantScoped() {
			continue // the platform operator has no tenant
		}
		email := string(r) + "@" + slug + ".example"
		u, err := e.authSvc.CreateUser(ctx, &authn.Principal{TenantID: tn.ID, Permissions: rbac.Admin.Permissions()}, auth.User{Email: email, Role: r}, password)
		if err != nil {
			t.Fatal(err)
		}
		f.users[r] = u
		f.tokens[r] = e.login(t, slug, email, password)
	}
	admin := &authn.Principal{TenantID: tn.ID, Subject: f.users[rbac.Admin].ID, Permissions: rbac.Admin.Permissions()}
	if _, f.apiKey, err = e.authSvc.CreateAPIKey(ctx, admin, "reader", []string{rbac.CampaignsRead}, nil); err != nil {
		t.Fatal(err)
	}
	return f
}

func (e *env) login(t *testing.T, tenant, email, pw string) string {
	t.Helper()
	resp, err := e.auth.Login(context.Background(), &authv1.LoginRequest{Tenant: tenant, Email: email, Password: pw})
	if err != nil {
		t.Fatalf("login %s/%s: %v", tenant, email, err)
	}
	return resp.GetAccessToken()
}

// operatorToken bootstraps the platform operator and logs in.
func (e *env) operatorToken(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := e.authSvc.Bootstrap(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "operator.json"))
	if err != nil {
		t.Fatal(err)
	}
	var op struct{ Email, Password string }
	if err := json.Unmarshal(data, &op); err != nil {
		t.Fatal(err)
	}
	return e.login(t, "", op.Email, op.Password)
}

// newDraft is a complete campaign as a client sends it.
func newDraft(name string) *campaignsv1.Campaign {
	daily := int64(10_000_000)
	return &campaignsv1.Campaign{
		Name: name, Channel: campaignsv1.Channel_CHANNEL_EMAIL,
		Schedule: &campaignsv1.Schedule{Start: "2099-03-08T09:00", End: "2099-11-01T01:30", TimeZone: "America/New_York"},
		Budget: &campaignsv1.Budget{TotalMicros: 100_000_000, DailyMicros: &daily, CurrencyCode: "USD",
			Pacing: campaignsv1.Budget_PACING_EVEN},
		Goal:     &campaignsv1.Goal{ConversionEvent: "purchase"},
		Variants: []*campaignsv1.Variant{{Name: "a", Weight: 50}, {Name: "b", Weight: 50}},
		Tags:     []string{"spring"},
		Labels:   map[string]string{"team": "growth"},
	}
}

// campaignIn makes, in f's tenant and directly through the domain, a campaign in state.
func (e *env) campaignIn(t *testing.T, f tenantFixture, state campaigns.State) campaigns.Campaign {
	t.Helper()
	ctx := context.Background()
	c := campaigns.Campaign{
		Name: "target", Channel: campaigns.ChannelWeb,
		Schedule: campaigns.Schedule{Start: mustWall(t, "2099-01-01T00:00"), TimeZone: "UTC"},
		Budget:   campaigns.Budget{TotalMicros: 1_000_000, Currency: "EUR"},
	}
	c, err := e.svc.CreateCampaign(ctx, f.principal(), c)
	if err != nil {
		t.Fatal(err)
	}
	path := map[campaigns.State][]campaigns.Action{
		campaigns.Scheduled: {campaigns.ActSchedule},
		campaigns.Active:    {campaigns.ActSchedule, campaigns.ActActivate},
		campaigns.Paused:    {campaigns.ActSchedule, campaigns.ActActivate, campaigns.ActPause},
	}[state]
	for _, a := range path {
		if c, err = e.svc.Transition(ctx, f.principal(), c.ID, a, ""); err != nil {
			t.Fatal(err)
		}
	}
	if c.State != state {
		t.Fatalf("made a %s campaign, want %s", c.State, state)
	}
	return c
}

func mustWall(t *testing.T, s string) campaigns.WallClock {
	t.Helper()
	w, err := campaigns.ParseWallClock(s)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// waitFor polls cond until it holds, for at most 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	meshtest.Eventually(t, 20*time.Second, cond, "%s", what)
}
