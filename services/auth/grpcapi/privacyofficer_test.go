package grpcapi_test

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// The privacy officer is a tenant role end to end: stored on users and invitations, mapped to
// ROLE_PRIVACY_OFFICER, listed by ListRoles, and holding exactly dsr.manage, privacy.manage and
// audit.read once logged in.
func TestPrivacyOfficerRole(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "privacy")
	admin := as(f.tokens[rbac.Admin])
	want := []string{rbac.AuditRead, rbac.DSRManage, rbac.PrivacyManage}

	// The fixture's privacy officer was created and logged in; its token holds the three.
	who, err := e.client.WhoAmI(as(f.tokens[rbac.PrivacyOfficer]), &authv1.WhoAmIRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if who.GetRole() != authv1.Role_ROLE_PRIVACY_OFFICER || !slices.Equal(who.GetPermissions(), want) {
		t.Fatalf("privacy officer whoami: role %v permissions %v, want ROLE_PRIVACY_OFFICER %v", who.GetRole(), who.GetPermissions(), want)
	}

	// An admin creates one over the API, and reads it back with its role.
	po, err := e.client.CreateUser(admin, &authv1.CreateUserRequest{
		User: &authv1.User{Email: "dpo@privacy.example", Role: authv1.Role_ROLE_PRIVACY_OFFICER}, Password: password})
	if err != nil {
		t.Fatalf("admin creates a privacy officer: %v", err)
	}
	got, err := e.client.GetUser(admin, &authv1.GetUserRequest{Id: po.GetId()})
	if err != nil || got.GetRole() != authv1.Role_ROLE_PRIVACY_OFFICER {
		t.Fatalf("get the privacy officer: %v, %v", got, err)
	}
	tok := e.login(t, "privacy", "dpo@privacy.example", password)
	if who, err := e.client.WhoAmI(as(tok), &authv1.WhoAmIRequest{}); err != nil || !slices.Equal(who.GetPermissions(), want) {
		t.Fatalf("created privacy officer whoami: %v, %v", who, err)
	}

	// An admin gives the role to an existing user.
	changed, err := e.client.ChangeUserRole(admin, &authv1.ChangeUserRoleRequest{Id: f.users[rbac.Viewer].ID, Role: authv1.Role_ROLE_PRIVACY_OFFICER})
	if err != nil || changed.GetRole() != authv1.Role_ROLE_PRIVACY_OFFICER {
		t.Fatalf("admin makes a viewer privacy officer: %v, %v", changed, err)
	}

	// An admin invites one, and a platform operator invites one into any tenant.
	inv, err := e.client.CreateInvitation(admin, &authv1.CreateInvitationRequest{
		Invitation: &authv1.Invitation{Email: "invited-dpo@privacy.example", Role: authv1.Role_ROLE_PRIVACY_OFFICER}})
	if err != nil {
		t.Fatalf("admin invites a privacy officer: %v", err)
	}
	accepted, err := e.client.AcceptInvitation(context.Background(), &authv1.AcceptInvitationRequest{Token: inv.GetSecret(), Password: password})
	if err != nil || accepted.GetUser().GetRole() != authv1.Role_ROLE_PRIVACY_OFFICER {
		t.Fatalf("accept the privacy officer invitation: %v, %v", accepted, err)
	}
	op := as(e.operator(t))
	if _, err := e.client.CreateTenantInvitation(op, &authv1.CreateTenantInvitationRequest{TenantId: f.tenant.ID,
		Invitation: &authv1.Invitation{Email: "op-dpo@privacy.example", Role: authv1.Role_ROLE_PRIVACY_OFFICER}}); err != nil {
		t.Fatalf("operator invites a privacy officer: %v", err)
	}

	// ListRoles shows it with its permissions.
	roles, err := e.client.ListRoles(admin, &authv1.ListRolesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(roles.GetRoles(), func(r *authv1.RoleInfo) bool { return r.GetRole() == authv1.Role_ROLE_PRIVACY_OFFICER })
	if i < 0 || !slices.Equal(roles.GetRoles()[i].GetPermissions(), want) {
		t.Fatalf("ListRoles = %v, want ROLE_PRIVACY_OFFICER with %v", roles.GetRoles(), want)
	}
}

// Delegation around the privacy officer: it manages no users, so it grants nobody anything
// (least of all admin); a key with users.manage but without dsr.manage cannot make one, nor
// touch one.
func TestPrivacyOfficerDelegation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "pdeleg")
	po := as(f.tokens[rbac.PrivacyOfficer])
	denied := func(what string, err error, wantReason string) {
		t.Helper()
		if status.Code(err) != codes.PermissionDenied || reason(err) != wantReason {
			t.Errorf("%s: %v (reason %q), want PermissionDenied %s", what, err, reason(err), wantReason)
		}
	}

	_, err := e.client.CreateUser(po, &authv1.CreateUserRequest{User: &authv1.User{Email: "a@pdeleg.example", Role: authv1.Role_ROLE_ADMIN}, Password: password})
	denied("privacy officer creates an admin", err, "PERMISSION_DENIED")
	_, err = e.client.ChangeUserRole(po, &authv1.ChangeUserRoleRequest{Id: f.users[rbac.Viewer].ID, Role: authv1.Role_ROLE_ADMIN})
	denied("privacy officer promotes a viewer to admin", err, "PERMISSION_DENIED")
	_, err = e.client.ChangeUserRole(po, &authv1.ChangeUserRoleRequest{Id: f.users[rbac.PrivacyOfficer].ID, Role: authv1.Role_ROLE_ADMIN})
	denied("privacy officer promotes itself to admin", err, "PERMISSION_DENIED")
	_, err = e.client.CreateInvitation(po, &authv1.CreateInvitationRequest{Invitation: &authv1.Invitation{Email: "i@pdeleg.example", Role: authv1.Role_ROLE_ADMIN}})
	denied("privacy officer invites an admin", err, "PERMISSION_DENIED")
	_, err = e.client.CreateApiKey(po, &authv1.CreateApiKeyRequest{Name: "k", Scopes: []string{rbac.UsersManage}})
	denied("privacy officer mints a users.manage key", err, "PERMISSION_DENIED")

	// users.manage with everything a viewer, analyst and manager hold, but no dsr.manage.
	key := as(mintKey(t, e, f, rbac.UsersManage, rbac.UsersRead, rbac.CampaignsRead, rbac.CampaignsWrite, rbac.AnalyticsRead, rbac.EventsWrite, rbac.EventsDebug,
		rbac.ContactsRead, rbac.ContactsWrite, rbac.MessagesSend, rbac.UsageRead))
	_, err = e.client.CreateUser(key, &authv1.CreateUserRequest{User: &authv1.User{Email: "p@pdeleg.example", Role: authv1.Role_ROLE_PRIVACY_OFFICER}, Password: password})
	denied("users.manage key creates a privacy officer", err, "DELEGATION_EXCEEDS_CALLER")
	_, err = e.client.ChangeUserRole(key, &authv1.ChangeUserRoleRequest{Id: f.users[rbac.Viewer].ID, Role: authv1.Role_ROLE_PRIVACY_OFFICER})
	denied("users.manage key makes a viewer privacy officer", err, "DELEGATION_EXCEEDS_CALLER")
	_, err = e.client.CreateInvitation(key, &authv1.CreateInvitationRequest{Invitation: &authv1.Invitation{Email: "q@pdeleg.example", Role: authv1.Role_ROLE_PRIVACY_OFFICER}})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("users.manage key invites a privacy officer: %v, want PermissionDenied", err)
	}
	_, err = e.client.DisableUser(key, &authv1.DisableUserRequest{Id: f.users[rbac.PrivacyOfficer].ID})
	denied("users.manage key disables the privacy officer", err, "TARGET_EXCEEDS_CALLER")
	_, err = e.client.ChangeUserRole(key, &authv1.ChangeUserRoleRequest{Id: f.users[rbac.PrivacyOfficer].ID, Role: authv1.Role_ROLE_VIEWER})
	denied("users.manage key demotes the privacy officer", err, "TARGET_EXCEEDS_CALLER")

	// The key still makes the roles it covers.
	if _, err := e.client.CreateUser(key, &authv1.CreateUserRequest{User: &authv1.User{Email: "m@pdeleg.example", Role: authv1.Role_ROLE_MANAGER}, Password: password}); err != nil {
		t.Errorf("users.manage key creates a manager: %v", err)
	}
}
