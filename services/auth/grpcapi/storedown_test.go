package grpcapi_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/status"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
)

// When auth's database goes away, its calls answer UNAVAILABLE with retry info — a public call,
// a call with an access token and one with a not yet seen API key (checked against the store
// before any handler) — and nothing is logged as an error.
func TestDatabaseOutageAnswersUnavailable(t *testing.T) {
	ctx := context.Background()
	proxy, dbURL := pgtest.NewProxy(t, pgtest.NewDatabase(t))
	logs := &meshtest.LogBuffer{}
	a := servicetest.StartAuth(t, servicetest.AuthOptions{Database: dbURL, Logger: telemetry.NewLogger(logs, "auth", slog.LevelDebug)})
	client := a.Client(t, "gateway")
	tn := a.NewTenant(t, "acme")
	token := tn.Token
	_, key, err := a.Service().CreateAPIKey(ctx, &authn.Principal{TenantID: tn.Tenant.ID, Subject: tn.Admin.ID, Permissions: rbac.Admin.Permissions()}, "reader", []string{rbac.UsersRead}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.ListUsers(as(token), &authv1.ListUsersRequest{}); err != nil {
		t.Fatalf("before the outage: %v", err)
	}

	proxy.Cut()
	_, err = client.Login(ctx, &authv1.LoginRequest{Tenant: "acme", Email: tn.Admin.Email, Password: tn.Password})
	meshtest.RequireStoreUnavailable(t, "Login", status.Convert(err))
	_, err = client.ListUsers(as(token), &authv1.ListUsersRequest{})
	meshtest.RequireStoreUnavailable(t, "ListUsers with an access token", status.Convert(err))
	_, err = client.ListUsers(as(key), &authv1.ListUsersRequest{})
	meshtest.RequireStoreUnavailable(t, "ListUsers with an API key", status.Convert(err))

	wantLoggedAsWarnings(t, logs.String())
}

// wantLoggedAsWarnings checks that the calls answered UNAVAILABLE were logged at warn, with the
// cause on a warn line, and none as an internal error. (A lost audit record is still an error,
// logged by the audit sink.)
func wantLoggedAsWarnings(t *testing.T, logs string) {
	t.Helper()
	calls, causes := 0, 0
	for _, l := range strings.Split(logs, "\n") {
		switch {
		case strings.Contains(l, `"msg":"internal error"`):
			t.Errorf("logged as an internal error: %s", l)
		case strings.Contains(l, `"grpc.code":"Unavailable"`):
			calls++
			if !strings.Contains(l, `"level":"WARN"`) {
				t.Errorf("not at warn: %s", l)
			}
		case strings.Contains(l, `"level":"WARN"`) && (strings.Contains(l, "connection refused") || strings.Contains(l, "EOF") || strings.Contains(l, "conn closed")):
			causes++
		}
	}
	if calls == 0 || causes < calls {
		t.Errorf("%d calls answered UNAVAILABLE, %d causes logged at warn:\n%s", calls, causes, logs)
	}
}
