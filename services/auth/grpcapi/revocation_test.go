package grpcapi_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn/authclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// Every way of taking access away refuses the access tokens issued before it, at once, in auth;
// ListRevocations tells the other services (authn.RevocationList) which ones.
func TestRevocationEndsEarlierAccessTokensAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	op := e.operator(t)
	whoami := func(token string) codes.Code {
		_, err := e.client.WhoAmI(as(token), &authv1.WhoAmIRequest{})
		return status.Code(err)
	}
	for name, tc := range map[string]struct {
		role   rbac.Role
		revoke func(f tenantFixture) error
		kind   authv1.Revocation_Kind
		// relogin: the user can still log in afterwards (with this password), and that token works.
		relogin string
	}{
		"disable user": {rbac.Manager, func(f tenantFixture) error {
			_, err := e.client.DisableUser(as(f.tokens[rbac.Admin]), &authv1.DisableUserRequest{Id: f.users[rbac.Manager].ID})
			return err
		}, authv1.Revocation_KIND_USER, ""},
		"change role": {rbac.Manager, func(f tenantFixture) error {
			_, err := e.client.ChangeUserRole(as(f.tokens[rbac.Admin]), &authv1.ChangeUserRoleRequest{Id: f.users[rbac.Manager].ID, Role: authv1.Role_ROLE_VIEWER})
			return err
		}, authv1.Revocation_KIND_USER, password},
		"revoke sessions": {rbac.Analyst, func(f tenantFixture) error {
			_, err := e.client.RevokeUserSessions(as(f.tokens[rbac.Admin]), &authv1.RevokeUserSessionsRequest{Id: f.users[rbac.Analyst].ID})
			return err
		}, authv1.Revocation_KIND_USER, password},
		"change password": {rbac.Viewer, func(f tenantFixture) error {
			_, err := e.client.ChangePassword(as(f.tokens[rbac.Viewer]), &authv1.ChangePasswordRequest{CurrentPassword: password, NewPassword: "a brand new password"})
			return err
		}, authv1.Revocation_KIND_USER, "a brand new password"},
		"suspend tenant": {rbac.Admin, func(f tenantFixture) error {
			_, err := e.client.SuspendTenant(as(op), &authv1.SuspendTenantRequest{Id: f.tenant.ID})
			return err
		}, authv1.Revocation_KIND_TENANT, ""},
	} {
		slug := map[string]string{"disable user": "rv-dis", "change role": "rv-role", "revoke sessions": "rv-sess", "change password": "rv-pw", "suspend tenant": "rv-susp"}[name]
		f := e.tenantWithRoles(t, slug)
		old := f.tokens[tc.role]
		if c := whoami(old); c != codes.OK {
			t.Fatalf("%s: token before: %v", name, c)
		}
		if err := tc.revoke(f); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c := whoami(old); c != codes.Unauthenticated {
			t.Errorf("%s: the earlier token answers %v, want Unauthenticated", name, c)
		}
		// Others of the tenant keep theirs, unless the whole tenant went.
		if c := whoami(f.tokens[rbac.Admin]); tc.kind == authv1.Revocation_KIND_USER && c != codes.OK {
			t.Errorf("%s: the admin's token answers %v", name, c)
		}
		if tc.relogin != "" {
			if c := whoami(e.login(t, slug, string(tc.role)+"@"+slug+".example", tc.relogin)); c != codes.OK {
				t.Errorf("%s: a token issued after answers %v", name, c)
			}
		}
		// The mesh hears of it.
		resp, err := e.clientAs(t, "ingest").ListRevocations(ctx, &authv1.ListRevocationsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		id := f.users[tc.role].ID
		if tc.kind == authv1.Revocation_KIND_TENANT {
			id = f.tenant.ID
		}
		found := false
		for _, r := range resp.GetRevocations() {
			found = found || (r.GetKind() == tc.kind && r.GetId() == id && r.GetTokenEpoch() > 0)
		}
		if !found {
			t.Errorf("%s: ListRevocations does not name %s %s: %v", name, tc.kind, id, resp.GetRevocations())
		}
	}
}

// A service's RevocationList, fed by ListRevocations, refuses what auth revoked: a cached access
// token of a disabled user, an API key revoked while cached, and a suspended tenant's key.
func TestRevocationListRefusesWhatAuthRevoked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	f := e.tenantWithRoles(t, "revlist")
	client := e.clientAs(t, "campaigns")
	verifier, revocations := authclient.NewVerifier(client)
	refresh := func() {
		t.Helper()
		if err := revocations.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	key := func(name string) (string, string) {
		resp, err := e.client.CreateApiKey(as(f.tokens[rbac.Admin]), &authv1.CreateApiKeyRequest{Name: name, Scopes: []string{"events.write"}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetApiKey().GetId(), resp.GetSecret()
	}
	keyID, secret := key("revoked")
	_, otherSecret := key("kept")
	refresh()
	for _, cred := range []string{f.tokens[rbac.Manager], secret, otherSecret} {
		if _, err := verifier.Verify(ctx, cred); err != nil { // now cached
			t.Fatal(err)
		}
	}
	if _, err := e.client.DisableUser(as(f.tokens[rbac.Admin]), &authv1.DisableUserRequest{Id: f.users[rbac.Manager].ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.RevokeApiKey(as(f.tokens[rbac.Admin]), &authv1.RevokeApiKeyRequest{Id: keyID}); err != nil {
		t.Fatal(err)
	}
	if _, err := verifier.Verify(ctx, f.tokens[rbac.Manager]); err != nil {
		t.Fatalf("before the list heard of it, the cached token should still pass: %v", err)
	}
	refresh()
	for name, cred := range map[string]string{"disabled user's token": f.tokens[rbac.Manager], "revoked key": secret} {
		if _, err := verifier.Verify(ctx, cred); err == nil {
			t.Errorf("%s still verifies", name)
		}
	}
	if _, err := verifier.Verify(ctx, otherSecret); err != nil {
		t.Fatalf("unrevoked key refused: %v", err)
	}
	if _, err := verifier.Verify(ctx, f.tokens[rbac.Analyst]); err != nil {
		t.Fatalf("unrevoked token refused: %v", err)
	}

	op := e.operator(t)
	if _, err := e.client.SuspendTenant(as(op), &authv1.SuspendTenantRequest{Id: f.tenant.ID}); err != nil {
		t.Fatal(err)
	}
	refresh()
	for name, cred := range map[string]string{"suspended tenant's key": otherSecret, "suspended tenant's token": f.tokens[rbac.Analyst]} {
		if _, err := verifier.Verify(ctx, cred); err == nil {
			t.Errorf("%s still verifies", name)
		}
	}
}
