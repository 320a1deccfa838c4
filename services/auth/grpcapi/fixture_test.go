package grpcapi_test

import (
	"context"
	"testing"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

const password = "a long enough password"

// tenantFixture is a tenant with one logged-in user per tenant role (every role of rbac.Roles
// but the platform operator, so a new role joins every test that walks the fixture).
type tenantFixture struct {
	tenant auth.Tenant
	users  map[rbac.Role]auth.User
	tokens map[rbac.Role]string
}

func (e *env) tenantWithRoles(t *testing.T, slug string) tenantFixture {
	t.Helper()
	ctx := context.Background()
	tn, err := e.svc.CreateTenant(ctx, slug, slug)
	if err != nil {
		t.Fatal(err)
	}
	f := tenantFixture{tenant: tn, users: map[rbac.Role]auth.User{}, tokens: map[rbac.Role]string{}}
	for _, r := range tenantRoles() {
		email := string(r) + "@" + slug + ".example"
		u, err := e.svc.CreateUser(ctx, adminOf(tn.ID), auth.User{Email: email, Role: r}, password)
		if err != nil {
			t.Fatal(err)
		}
		f.users[r] = u
		f.tokens[r] = e.login(t, slug, email, password)
	}
	return f
}

// tenantRoles are the roles a tenant user can hold, in rbac.Roles order.
func tenantRoles() []rbac.Role {
	var rs []rbac.Role
	for _, r := range rbac.Roles() {
		if r.TenantScoped() {
			rs = append(rs, r)
		}
	}
	return rs
}

// bootstrap runs the first-start bootstrap and returns the folder with operator.json and
// admin.json.
func (e *env) bootstrap(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := e.svc.Bootstrap(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// operator bootstraps the platform operator and returns its token.
func (e *env) operator(t *testing.T) string {
	t.Helper()
	op := readLoginFile(t, e.bootstrap(t)+"/operator.json")
	return e.login(t, "", op.GetEmail(), op.GetPassword())
}

func (e *env) loginFull(t *testing.T, tenant, email, pw string) *authv1.LoginResponse {
	t.Helper()
	resp, err := e.client.Login(context.Background(), &authv1.LoginRequest{Tenant: tenant, Email: email, Password: pw})
	if err != nil {
		t.Fatalf("login %s/%s: %v", tenant, email, err)
	}
	return resp
}

// adminOf is a tenant admin's principal, for seeding users straight through the service.
func adminOf(tenantID string) *authn.Principal {
	return &authn.Principal{TenantID: tenantID, Permissions: rbac.Admin.Permissions()}
}
