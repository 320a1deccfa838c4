package grpcapi_test

import (
	"slices"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// reason returns the ErrorInfo reason of err, or "".
func reason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// mintKey has the admin of f create an API key with scopes and returns its secret.
func mintKey(t *testing.T, e *env, f tenantFixture, scopes ...string) string {
	t.Helper()
	k, err := e.client.CreateApiKey(as(f.tokens[rbac.Admin]), &authv1.CreateApiKeyRequest{Name: "delegate", Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return k.GetSecret()
}

// A credential that may manage users still cannot hand out, or take away, more than it holds:
// no user it creates or re-roles gets a permission it lacks, and it cannot change, disable,
// unlock or end the sessions of a user whose role holds a permission it lacks.
func TestUserManagementNeverWidensTheCaller(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "deleg")
	// users.manage and what a viewer holds: enough to create viewers and nothing more.
	key := as(mintKey(t, e, f, rbac.UsersManage, rbac.CampaignsRead))
	denied := func(what string, err error, wantReason string) {
		t.Helper()
		if status.Code(err) != codes.PermissionDenied || reason(err) != wantReason {
			t.Errorf("%s: %v (reason %q), want PermissionDenied %s", what, err, reason(err), wantReason)
		}
	}
	newUser := func(email string, role authv1.Role) (*authv1.User, error) {
		return e.client.CreateUser(key, &authv1.CreateUserRequest{User: &authv1.User{Email: email, Role: role}, Password: password})
	}

	for _, role := range []authv1.Role{authv1.Role_ROLE_ADMIN, authv1.Role_ROLE_MANAGER, authv1.Role_ROLE_ANALYST} {
		_, err := newUser("x-"+role.String()+"@deleg.example", role)
		denied("create "+role.String(), err, "DELEGATION_EXCEEDS_CALLER")
	}
	viewer, err := newUser("v@deleg.example", authv1.Role_ROLE_VIEWER)
	if err != nil {
		t.Fatalf("create a viewer: %v", err)
	}
	for _, role := range []authv1.Role{authv1.Role_ROLE_ADMIN, authv1.Role_ROLE_MANAGER} {
		_, err := e.client.ChangeUserRole(key, &authv1.ChangeUserRoleRequest{Id: viewer.GetId(), Role: role})
		denied("promote a viewer to "+role.String(), err, "DELEGATION_EXCEEDS_CALLER")
	}

	// Users above the key: admin and manager are untouchable for it.
	for _, r := range []rbac.Role{rbac.Admin, rbac.Manager} {
		id := f.users[r].ID
		_, err := e.client.ChangeUserRole(key, &authv1.ChangeUserRoleRequest{Id: id, Role: authv1.Role_ROLE_VIEWER})
		denied("demote the "+string(r), err, "TARGET_EXCEEDS_CALLER")
		_, err = e.client.DisableUser(key, &authv1.DisableUserRequest{Id: id})
		denied("disable the "+string(r), err, "TARGET_EXCEEDS_CALLER")
		_, err = e.client.UnlockUser(key, &authv1.UnlockUserRequest{Id: id})
		denied("unlock the "+string(r), err, "TARGET_EXCEEDS_CALLER")
		_, err = e.client.RevokeUserSessions(key, &authv1.RevokeUserSessionsRequest{Id: id})
		denied("end the sessions of the "+string(r), err, "TARGET_EXCEEDS_CALLER")
	}
	who, err := e.client.GetUser(as(f.tokens[rbac.Admin]), &authv1.GetUserRequest{Id: f.users[rbac.Admin].ID})
	if err != nil || who.GetRole() != authv1.Role_ROLE_ADMIN || who.GetState() != authv1.User_STATE_ACTIVE {
		t.Fatalf("the admin after the key's attempts: %v, %v", who, err)
	}

	// Within its reach the key still works.
	if _, err := e.client.UnlockUser(key, &authv1.UnlockUserRequest{Id: viewer.GetId()}); err != nil {
		t.Errorf("unlock a viewer: %v", err)
	}
	if _, err := e.client.RevokeUserSessions(key, &authv1.RevokeUserSessionsRequest{Id: viewer.GetId()}); err != nil {
		t.Errorf("end a viewer's sessions: %v", err)
	}
	if _, err := e.client.ChangeUserRole(key, &authv1.ChangeUserRoleRequest{Id: viewer.GetId(), Role: authv1.Role_ROLE_VIEWER}); err != nil {
		t.Errorf("re-role a viewer as viewer: %v", err)
	}
	if _, err := e.client.DisableUser(key, &authv1.DisableUserRequest{Id: viewer.GetId()}); err != nil {
		t.Errorf("disable a viewer: %v", err)
	}

	// A key with users.manage alone holds no role's permissions: it creates nobody.
	bare := as(mintKey(t, e, f, rbac.UsersManage))
	_, err = e.client.CreateUser(bare, &authv1.CreateUserRequest{User: &authv1.User{Email: "w@deleg.example", Role: authv1.Role_ROLE_VIEWER}, Password: password})
	denied("users.manage alone creates a viewer", err, "DELEGATION_EXCEEDS_CALLER")

	// A real admin keeps every power over every role.
	if _, err := e.client.ChangeUserRole(as(f.tokens[rbac.Admin]), &authv1.ChangeUserRoleRequest{Id: f.users[rbac.Analyst].ID, Role: authv1.Role_ROLE_ADMIN}); err != nil {
		t.Fatalf("admin promotes an analyst: %v", err)
	}
}

// The whole escalation chain of issue 10: a key that may manage users creates a user of each
// role, logs in as it, and mints API keys with every permission that user holds. Every
// permission that comes out of the chain must be one the original key held.
func TestUserManagementKeyCannotEscalateThroughAUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "chain")
	held := []string{rbac.UsersManage, rbac.CampaignsRead}
	key := as(mintKey(t, e, f, held...))
	roles := map[rbac.Role]authv1.Role{rbac.Admin: authv1.Role_ROLE_ADMIN, rbac.Manager: authv1.Role_ROLE_MANAGER,
		rbac.Analyst: authv1.Role_ROLE_ANALYST, rbac.Viewer: authv1.Role_ROLE_VIEWER}
	for role, protoRole := range roles {
		email := "made-" + string(role) + "@chain.example"
		_, err := e.client.CreateUser(key, &authv1.CreateUserRequest{User: &authv1.User{Email: email, Role: protoRole}, Password: password})
		if err != nil {
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("create %s: %v", role, err)
			}
			continue
		}
		tok := as(e.login(t, "chain", email, password))
		for _, p := range role.Permissions() {
			minted, err := e.client.CreateApiKey(tok, &authv1.CreateApiKeyRequest{Name: "escalated", Scopes: []string{p}})
			if err == nil && !slices.Contains(held, p) {
				t.Errorf("a %s made by the key minted a key with %s (id %s), which the key never held", role, p, minted.GetApiKey().GetId())
			}
		}
		// Nor can it act with them directly.
		who, err := e.client.WhoAmI(tok, &authv1.WhoAmIRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range who.GetPermissions() {
			if !slices.Contains(held, p) {
				t.Errorf("a %s made by the key holds %s, which the key never held", role, p)
			}
		}
	}
}
