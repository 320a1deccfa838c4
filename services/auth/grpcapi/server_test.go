package grpcapi_test

import (
	"context"
	"os"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn/authclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/auth"
	"github.com/campaignmesh/campaignmesh/services/auth/app"
	"github.com/campaignmesh/campaignmesh/services/auth/postgres"
)

// env is an auth server on loopback, behind the real interceptor chain and real mTLS, on its
// own PostgreSQL database, called with the gateway's mesh identity. It is the service as
// cmd/auth builds it (package app, through servicetest.StartAuth).
type env struct {
	client authv1.AuthServiceClient
	svc    *auth.Service
	store  *postgres.Store
	ca     *mtls.CA
	addr   string
	// auth is the running service; stop stops it (serve starts it again on the same address
	// and database).
	auth *servicetest.Auth
	stop func()
}

func newEnv(t *testing.T, configure ...func(*auth.Service)) *env {
	t.Helper()
	e := &env{}
	e.serve(t, servicetest.AuthOptions{Config: func(c *app.Config) {
		c.AccessTokenTTL = 5 * time.Minute
		c.ConfigureService = func(s *auth.Service) {
			for _, c := range configure {
				c(s)
			}
		}
	}})
	e.client = e.clientAs(t, "gateway")
	return e
}

// serve starts the auth server from o, or, after a stop, the same server again (its address,
// database and keys).
func (e *env) serve(t *testing.T, o ...servicetest.AuthOptions) {
	t.Helper()
	opts := servicetest.AuthOptions{}
	switch {
	case e.auth != nil:
		opts = e.auth.Options
	case len(o) > 0:
		opts = o[0]
	}
	e.auth = servicetest.StartAuth(t, opts)
	e.svc, e.store, e.ca, e.addr, e.stop = e.auth.Service(), e.auth.Store(), e.auth.CA, e.auth.Addr(), e.auth.Stop
}

// clientAs returns a client with the mesh identity service.
func (e *env) clientAs(t *testing.T, service string) authv1.AuthServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(mtlstest.Source(t, e.ca, service).ClientConfig("auth"))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv1.NewAuthServiceClient(conn)
}

func as(token string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
}

func (e *env) login(t *testing.T, tenant, email, password string) string {
	t.Helper()
	resp, err := e.client.Login(context.Background(), &authv1.LoginRequest{Tenant: tenant, Email: email, Password: password})
	if err != nil {
		t.Fatalf("login %s/%s: %v", tenant, email, err)
	}
	return resp.GetAccessToken()
}

func TestLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tn, err := e.svc.CreateTenant(ctx, "acme", "Acme")
	if err != nil {
		t.Fatal(err)
	}
	admin := &authn.Principal{TenantID: tn.ID, Subject: "bootstrap", Permissions: rbac.Admin.Permissions()}
	u, err := e.svc.CreateUser(ctx, admin, auth.User{Email: "ann@acme.example", Role: "viewer"}, "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}

	tok := e.login(t, "acme", "ann@acme.example", "correct horse battery")
	who, err := e.client.WhoAmI(as(tok), &authv1.WhoAmIRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if who.GetSubject() != u.ID || who.GetTenantId() != tn.ID || who.GetRole() != authv1.Role_ROLE_VIEWER || who.GetPeerService() != "gateway" {
		t.Fatalf("whoami = %v", who)
	}

	failures := map[string]*authv1.LoginRequest{
		"wrong password": {Tenant: "acme", Email: "ann@acme.example", Password: "wrong password!"},
		"unknown email":  {Tenant: "acme", Email: "bob@acme.example", Password: "correct horse battery"},
		"unknown tenant": {Tenant: "nope", Email: "ann@acme.example", Password: "correct horse battery"},
		"no tenant":      {Email: "ann@acme.example", Password: "correct horse battery"},
	}
	var msgs []string
	for name, req := range failures {
		_, err := e.client.Login(ctx, req)
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, want Unauthenticated", name, err)
		}
		msgs = append(msgs, status.Convert(err).Message())
	}
	for _, m := range msgs {
		if m != msgs[0] {
			t.Errorf("login failures differ (%q vs %q): they must not reveal which part was wrong", m, msgs[0])
		}
	}

	if _, err := e.svc.DisableUser(ctx, admin, u.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Login(ctx, &authv1.LoginRequest{Tenant: "acme", Email: "ann@acme.example", Password: "correct horse battery"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("disabled user login: %v", err)
	}
}

func TestTenantAdminsAndIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a, _ := e.svc.CreateTenant(ctx, "tenant-a", "A")
	b, _ := e.svc.CreateTenant(ctx, "tenant-b", "B")
	seed := func(tn auth.Tenant, email, role string) auth.User {
		u, err := e.svc.CreateUser(ctx, adminOf(tn.ID), auth.User{Email: email, Role: rbac.Role(role)}, "a long enough password")
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	seed(a, "admin@a.example", "admin")
	viewerA := seed(a, "viewer@a.example", "viewer")
	bUser := seed(b, "admin@b.example", "admin")
	adminA := e.login(t, "tenant-a", "admin@a.example", "a long enough password")
	viewer := e.login(t, "tenant-a", "viewer@a.example", "a long enough password")

	// A viewer calling an admin RPC.
	_, err := e.client.CreateUser(as(viewer), &authv1.CreateUserRequest{User: &authv1.User{Email: "new@a.example", Role: authv1.Role_ROLE_VIEWER}, Password: "a long enough password"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("viewer CreateUser: %v, want PermissionDenied", err)
	}
	// A tenant admin reading, disabling or re-roling another tenant's user: not found.
	if _, err := e.client.GetUser(as(adminA), &authv1.GetUserRequest{Id: bUser.ID}); status.Code(err) != codes.NotFound {
		t.Fatalf("foreign GetUser: %v, want NotFound", err)
	}
	if _, err := e.client.DisableUser(as(adminA), &authv1.DisableUserRequest{Id: bUser.ID}); status.Code(err) != codes.NotFound {
		t.Fatalf("foreign DisableUser: %v, want NotFound", err)
	}
	if _, err := e.client.ChangeUserRole(as(adminA), &authv1.ChangeUserRoleRequest{Id: bUser.ID, Role: authv1.Role_ROLE_VIEWER}); status.Code(err) != codes.NotFound {
		t.Fatalf("foreign ChangeUserRole: %v, want NotFound", err)
	}
	// A tenant admin cannot manage tenants.
	if _, err := e.client.ListTenants(as(adminA), &authv1.ListTenantsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("admin ListTenants: %v, want PermissionDenied", err)
	}
	list, err := e.client.ListUsers(as(adminA), &authv1.ListUsersRequest{})
	if err != nil || len(list.GetUsers()) != 2 {
		t.Fatalf("ListUsers = %v, %v; want the 2 users of tenant a", list, err)
	}
	for _, u := range list.GetUsers() {
		if u.GetTenantId() != a.ID {
			t.Fatalf("ListUsers returned a user of tenant %s", u.GetTenantId())
		}
	}

	// Mass assignment: server-owned fields in the request are ignored.
	created, err := e.client.CreateUser(as(adminA), &authv1.CreateUserRequest{
		User:     &authv1.User{Id: "11111111-1111-1111-1111-111111111111", TenantId: b.ID, Email: "mass@a.example", Role: authv1.Role_ROLE_ANALYST, State: authv1.User_STATE_DISABLED},
		Password: "a long enough password",
	})
	if err != nil {
		t.Fatal(err)
	}
	if created.GetTenantId() != a.ID || created.GetId() == "11111111-1111-1111-1111-111111111111" || created.GetState() != authv1.User_STATE_ACTIVE {
		t.Fatalf("server-owned fields taken from the request: %v", created)
	}
	// Roles: an admin cannot make anyone a platform operator, nor change their own role.
	if _, err := e.client.ChangeUserRole(as(adminA), &authv1.ChangeUserRoleRequest{Id: viewerA.ID, Role: authv1.Role_ROLE_PLATFORM_OPERATOR}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("grant operator: %v, want InvalidArgument", err)
	}
	who, _ := e.client.WhoAmI(as(adminA), &authv1.WhoAmIRequest{})
	if _, err := e.client.ChangeUserRole(as(adminA), &authv1.ChangeUserRoleRequest{Id: who.GetSubject(), Role: authv1.Role_ROLE_VIEWER}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("change own role: %v, want FailedPrecondition", err)
	}
	changed, err := e.client.ChangeUserRole(as(adminA), &authv1.ChangeUserRoleRequest{Id: viewerA.ID, Role: authv1.Role_ROLE_MANAGER})
	if err != nil || changed.GetRole() != authv1.Role_ROLE_MANAGER {
		t.Fatalf("ChangeUserRole = %v, %v", changed, err)
	}
	// Bad input is reported per field.
	_, err = e.client.CreateUser(as(adminA), &authv1.CreateUserRequest{User: &authv1.User{Email: "not an email"}, Password: "short"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("invalid CreateUser: %v", err)
	}
}

func TestOperatorManagesTenantsAndKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	dir := e.bootstrap(t)
	req := readLoginFile(t, dir+"/operator.json")
	op := e.login(t, req.GetTenant(), req.GetEmail(), req.GetPassword())

	tn, err := e.client.CreateTenant(as(op), &authv1.CreateTenantRequest{Tenant: &authv1.Tenant{Slug: "newco", DisplayName: "NewCo", State: authv1.Tenant_STATE_SUSPENDED}})
	if err != nil || tn.GetState() != authv1.Tenant_STATE_ACTIVE {
		t.Fatalf("CreateTenant = %v, %v", tn, err)
	}
	if _, err := e.client.CreateTenant(as(op), &authv1.CreateTenantRequest{Tenant: &authv1.Tenant{Slug: "newco", DisplayName: "Dup"}}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("duplicate tenant: %v", err)
	}
	if _, err := e.client.CreateTenant(as(op), &authv1.CreateTenantRequest{Tenant: &authv1.Tenant{Slug: "Bad Slug!", DisplayName: "x"}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad slug: %v", err)
	}
	sus, err := e.client.SuspendTenant(as(op), &authv1.SuspendTenantRequest{Id: tn.GetId()})
	if err != nil || sus.GetState() != authv1.Tenant_STATE_SUSPENDED {
		t.Fatalf("SuspendTenant = %v, %v", sus, err)
	}
	// The operator has no tenant: user RPCs are not theirs.
	if _, err := e.client.ListUsers(as(op), &authv1.ListUsersRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("operator ListUsers: %v, want PermissionDenied", err)
	}
	// Users of a suspended tenant cannot log in.
	admin := readLoginFile(t, dir+"/admin.json")
	if _, err := e.client.SuspendTenant(as(op), &authv1.SuspendTenantRequest{Id: mustTenantID(t, e, op, admin.GetTenant())}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Login(ctx, admin); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("login to suspended tenant: %v", err)
	}

	// Rotation: tokens signed by the old key keep working; new tokens use the new key.
	keys, err := e.client.ListSigningKeys(ctx, &authv1.ListSigningKeysRequest{})
	if err != nil || len(keys.GetKeys()) != 1 {
		t.Fatalf("keys = %v, %v", keys, err)
	}
	rotated, err := e.client.RotateSigningKey(as(op), &authv1.RotateSigningKeyRequest{})
	if err != nil || rotated.GetKid() == keys.GetKeys()[0].GetKid() {
		t.Fatalf("rotate = %v, %v", rotated, err)
	}
	if _, err := e.client.WhoAmI(as(op), &authv1.WhoAmIRequest{}); err != nil {
		t.Fatalf("token from before the rotation: %v", err)
	}
	fresh := e.login(t, "", req.GetEmail(), req.GetPassword())
	if _, err := e.client.WhoAmI(as(fresh), &authv1.WhoAmIRequest{}); err != nil {
		t.Fatalf("token after the rotation: %v", err)
	}
}

func mustTenantID(t *testing.T, e *env, op, slug string) string {
	t.Helper()
	list, err := e.client.ListTenants(as(op), &authv1.ListTenantsRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range list.GetTenants() {
		if tn.GetSlug() == slug {
			return tn.GetId()
		}
	}
	t.Fatalf("tenant %s not listed", slug)
	return ""
}

// readLoginFile reads a bootstrap credentials file: a LoginRequest in JSON.
func readLoginFile(t *testing.T, path string) *authv1.LoginRequest {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var req authv1.LoginRequest
	if err := protojson.Unmarshal(data, &req); err != nil {
		t.Fatalf("bootstrap file is not a LoginRequest: %v", err)
	}
	return &req
}

// Other services verify tokens locally with keys fetched from auth over mTLS; a rotation is
// picked up on the first token with the new kid once the minimum refresh interval has passed.
func TestRemoteKeysFollowRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	dir := e.bootstrap(t)
	op := readLoginFile(t, dir+"/operator.json")
	clock := meshtest.NewClock(time.Now())
	verifier := authn.NewJWTVerifier(authn.NewRemoteKeys(authclient.New(e.client), time.Hour, time.Minute).WithClock(clock.Now))
	before := e.login(t, "", op.GetEmail(), op.GetPassword())
	if p, err := verifier.Verify(ctx, before); err != nil || p.Role != rbac.PlatformOperator {
		t.Fatalf("verify before rotation: %+v %v", p, err)
	}
	if _, err := e.client.RotateSigningKey(as(before), &authv1.RotateSigningKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute) // past the minimum refresh interval of this verifier
	after := e.login(t, "", op.GetEmail(), op.GetPassword())
	if _, err := verifier.Verify(ctx, after); err != nil {
		t.Fatalf("token signed with the rotated key: %v", err)
	}
	if _, err := verifier.Verify(ctx, before); err != nil {
		t.Fatalf("token signed before the rotation: %v", err)
	}
}
