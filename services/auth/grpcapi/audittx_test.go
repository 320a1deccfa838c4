package grpcapi_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

// refuseAuditAppends installs, in the test's database, a trigger that refuses to append a
// successful audit record of any method listed in refused_audit_methods: a fault of the
// append inside the transaction of a change, for real in PostgreSQL.
func (e *env) refuseAuditAppends(t *testing.T) (refuse func(method string), allow func()) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.store.Pool().Exec(ctx, `
		CREATE TABLE refused_audit_methods (method text PRIMARY KEY);
		CREATE FUNCTION refuse_audit_append() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.outcome = 'OK' AND EXISTS (SELECT 1 FROM refused_audit_methods WHERE method = NEW.method) THEN
				RAISE EXCEPTION 'audit append refused by the test';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_audit_append BEFORE INSERT ON audit_records FOR EACH ROW EXECUTE FUNCTION refuse_audit_append();`); err != nil {
		t.Fatal(err)
	}
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := e.store.Pool().Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	return func(method string) { exec(`INSERT INTO refused_audit_methods (method) VALUES ($1)`, method) },
		func() { exec(`DELETE FROM refused_audit_methods`) }
}

// tables returns every row of the tables audited changes write, one string per row: what a
// change that did not commit must leave as it was. (Known login addresses are left out: they
// are a login's bookkeeping, not the audited change.)
func (e *env) tables(t *testing.T) []string {
	t.Helper()
	rows, err := e.store.Pool().Query(context.Background(), `
		SELECT 'tenant ' || x::text FROM tenants x
		UNION ALL SELECT 'user ' || x::text FROM users x
		UNION ALL SELECT 'api key ' || x::text FROM api_keys x
		UNION ALL SELECT 'refresh token ' || x::text FROM refresh_tokens x
		UNION ALL SELECT 'invitation ' || x::text FROM invitations x
		UNION ALL SELECT 'signing key ' || x::text FROM signing_keys x
		UNION ALL SELECT 'login failures ' || x::text FROM login_failures x`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// changed lists the rows only one of a and b holds.
func changed(a, b []string) []string {
	var d []string
	for _, r := range a {
		if !slices.Contains(b, r) {
			d = append(d, "- "+r)
		}
	}
	for _, r := range b {
		if !slices.Contains(a, r) {
			d = append(d, "+ "+r)
		}
	}
	return d
}

// auditOutcomes returns the outcome of every record of method, in every chain, by record id.
func (e *env) auditOutcomes(t *testing.T, method string) map[string]string {
	t.Helper()
	rows, err := e.store.Pool().Query(context.Background(), `SELECT id::text, outcome FROM audit_records WHERE method = $1`, method)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var id, outcome string
		if err := rows.Scan(&id, &outcome); err != nil {
			t.Fatal(err)
		}
		out[id] = outcome
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// newOutcomes lists the outcomes of the records in after and not in before.
func newOutcomes(before, after map[string]string) []string {
	var out []string
	for id, o := range after {
		if _, ok := before[id]; !ok {
			out = append(out, o)
		}
	}
	slices.Sort(out)
	return out
}

// Every audited change of auth commits together with its audit record, or neither does. With
// the append of its successful record refused inside PostgreSQL, each audited RPC fails and
// every table it writes is left as it was (the access layer then stores the failure: one
// INTERNAL record); once appends are allowed again, the very same call succeeds, its change
// commits, and the chain holds exactly one record of it — the one written with the change, none
// from the access layer after it.
func TestAuditedChangesCommitWithTheirRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	op := e.operator(t)
	f := e.tenantWithRoles(t, "atomic")
	admin := as(f.tokens[rbac.Admin])
	adminP := &authn.Principal{TenantID: f.tenant.ID, Subject: f.users[rbac.Admin].ID, Permissions: rbac.Admin.Permissions()}
	refuse, allow := e.refuseAuditAppends(t)

	user := func(name string) auth.User {
		t.Helper()
		u, err := e.svc.CreateUser(ctx, adminOf(f.tenant.ID), auth.User{Email: name + "@atomic.example", Role: rbac.Viewer}, password)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	// Each case prepares what its call needs and returns the call; the call is made twice.
	cases := map[string]func() func() error{
		"Login": func() func() error {
			user("login")
			return func() error {
				_, err := e.client.Login(ctx, &authv1.LoginRequest{Tenant: "atomic", Email: "login@atomic.example", Password: password})
				return err
			}
		},
		"Refresh": func() func() error {
			user("refresh")
			s := e.loginFull(t, "atomic", "refresh@atomic.example", password)
			return func() error {
				_, err := e.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: s.GetRefreshToken()})
				return err
			}
		},
		"Logout": func() func() error {
			user("logout")
			s := e.loginFull(t, "atomic", "logout@atomic.example", password)
			return func() error {
				_, err := e.client.Logout(ctx, &authv1.LogoutRequest{RefreshToken: s.GetRefreshToken()})
				return err
			}
		},
		"ChangePassword": func() func() error {
			user("password")
			tok := e.login(t, "atomic", "password@atomic.example", password)
			return func() error {
				_, err := e.client.ChangePassword(as(tok), &authv1.ChangePasswordRequest{CurrentPassword: password, NewPassword: "another long password"})
				return err
			}
		},
		"RotateSigningKey": func() func() error {
			return func() error {
				_, err := e.client.RotateSigningKey(as(op), &authv1.RotateSigningKeyRequest{})
				return err
			}
		},
		"CreateTenant": func() func() error {
			return func() error {
				_, err := e.client.CreateTenant(as(op), &authv1.CreateTenantRequest{Tenant: &authv1.Tenant{Slug: "created", DisplayName: "Created"}})
				return err
			}
		},
		"SuspendTenant": func() func() error {
			tn, err := e.svc.CreateTenant(ctx, "to-suspend", "To suspend")
			if err != nil {
				t.Fatal(err)
			}
			return func() error {
				_, err := e.client.SuspendTenant(as(op), &authv1.SuspendTenantRequest{Id: tn.ID})
				return err
			}
		},
		"SuspendTenantForBilling": func() func() error {
			tn, err := e.svc.CreateTenant(ctx, "to-suspend-billing", "To suspend for billing")
			if err != nil {
				t.Fatal(err)
			}
			billing := e.clientAs(t, "billing")
			return func() error {
				_, err := billing.SuspendTenantForBilling(ctx, &authv1.SuspendTenantForBillingRequest{TenantId: tn.ID, Reason: "grace period over"})
				return err
			}
		},
		"CreateUser": func() func() error {
			return func() error {
				_, err := e.client.CreateUser(admin, &authv1.CreateUserRequest{User: &authv1.User{Email: "created@atomic.example", Role: authv1.Role_ROLE_VIEWER}, Password: password})
				return err
			}
		},
		"DisableUser": func() func() error {
			u := user("disable")
			e.login(t, "atomic", "disable@atomic.example", password) // a session the disable ends
			return func() error {
				_, err := e.client.DisableUser(admin, &authv1.DisableUserRequest{Id: u.ID})
				return err
			}
		},
		"ChangeUserRole": func() func() error {
			u := user("role")
			return func() error {
				_, err := e.client.ChangeUserRole(admin, &authv1.ChangeUserRoleRequest{Id: u.ID, Role: authv1.Role_ROLE_ANALYST})
				return err
			}
		},
		"RevokeUserSessions": func() func() error {
			u := user("sessions")
			e.login(t, "atomic", "sessions@atomic.example", password)
			return func() error {
				_, err := e.client.RevokeUserSessions(admin, &authv1.RevokeUserSessionsRequest{Id: u.ID})
				return err
			}
		},
		"UnlockUser": func() func() error {
			u := user("unlock")
			if _, err := e.client.Login(ctx, &authv1.LoginRequest{Tenant: "atomic", Email: "unlock@atomic.example", Password: "a wrong password"}); status.Code(err) != codes.Unauthenticated {
				t.Fatalf("failed login: %v", err)
			}
			return func() error {
				_, err := e.client.UnlockUser(admin, &authv1.UnlockUserRequest{Id: u.ID})
				return err
			}
		},
		"CreateInvitation": func() func() error {
			return func() error {
				_, err := e.client.CreateInvitation(admin, &authv1.CreateInvitationRequest{Invitation: &authv1.Invitation{Email: "invited@atomic.example", Role: authv1.Role_ROLE_VIEWER}})
				return err
			}
		},
		"CreateTenantInvitation": func() func() error {
			return func() error {
				_, err := e.client.CreateTenantInvitation(as(op), &authv1.CreateTenantInvitationRequest{TenantId: f.tenant.ID,
					Invitation: &authv1.Invitation{Email: "operator-invited@atomic.example", Role: authv1.Role_ROLE_ADMIN}})
				return err
			}
		},
		"RevokeInvitation": func() func() error {
			inv, _, err := e.svc.CreateInvitation(ctx, adminP, "revoked@atomic.example", rbac.Viewer, nil)
			if err != nil {
				t.Fatal(err)
			}
			return func() error {
				_, err := e.client.RevokeInvitation(admin, &authv1.RevokeInvitationRequest{Id: inv.ID})
				return err
			}
		},
		"AcceptInvitation": func() func() error {
			_, token, err := e.svc.CreateInvitation(ctx, adminP, "accepted@atomic.example", rbac.Viewer, nil)
			if err != nil {
				t.Fatal(err)
			}
			return func() error {
				_, err := e.client.AcceptInvitation(ctx, &authv1.AcceptInvitationRequest{Token: token, Password: password})
				return err
			}
		},
		"CreateApiKey": func() func() error {
			return func() error {
				_, err := e.client.CreateApiKey(admin, &authv1.CreateApiKeyRequest{Name: "atomic", Scopes: []string{"users.read"}})
				return err
			}
		},
		"RevokeApiKey": func() func() error {
			k, _, err := e.svc.CreateAPIKey(ctx, adminP, "to revoke", []string{"users.read"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			return func() error {
				_, err := e.client.RevokeApiKey(admin, &authv1.RevokeApiKeyRequest{Id: k.ID})
				return err
			}
		},
	}

	sd := authv1.File_campaignmesh_auth_v1_service_proto.Services().ByName("AuthService")
	for i := 0; i < sd.Methods().Len(); i++ {
		md := sd.Methods().Get(i)
		if rule, _ := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule); !rule.GetAudit() {
			continue
		}
		name := string(md.Name())
		method := "/campaignmesh.auth.v1.AuthService/" + name
		prepare, ok := cases[name]
		if !ok {
			t.Errorf("%s is audited but this test does not call it", name)
			continue
		}
		call := prepare()

		refuse(method)
		tables, records := e.tables(t), e.auditOutcomes(t, method)
		err := call()
		if status.Code(err) != codes.Internal {
			t.Errorf("%s with its record refused: %v, want INTERNAL", name, err)
		}
		if d := changed(tables, e.tables(t)); len(d) > 0 {
			t.Errorf("%s committed its change without its record:\n%v", name, d)
		}
		failed := e.auditOutcomes(t, method)
		if got := newOutcomes(records, failed); !slices.Equal(got, []string{"INTERNAL"}) {
			t.Errorf("%s with its record refused stored records %v, want its failure only", name, got)
		}

		allow()
		tables = e.tables(t)
		if err := call(); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if d := changed(tables, e.tables(t)); len(d) == 0 {
			t.Errorf("%s succeeded without a change", name)
		}
		if got := newOutcomes(failed, e.auditOutcomes(t, method)); !slices.Equal(got, []string{"OK"}) {
			t.Errorf("%s stored records %v, want exactly one OK", name, got)
		}
	}
	if ok, err := e.client.VerifyAuditChain(admin, &authv1.VerifyAuditChainRequest{}); err != nil || !ok.GetOk() {
		t.Errorf("tenant chain: %v %v", ok, err)
	}
}

// Changes and the access layer's records append to one chain at once without deadlocks or gaps:
// the chain lock is always taken last. Concurrent role changes of the same users (row locks,
// then the chain), logins (a new session, then the chain) and denied calls (the chain alone,
// through the sink) all succeed, each with one record, and the chain verifies.
func TestConcurrentAuditedChangesShareTheChain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "busy")
	admin, viewer := as(f.tokens[rbac.Admin]), as(f.tokens[rbac.Viewer])
	ctx := context.Background()
	roles := []authv1.Role{authv1.Role_ROLE_ANALYST, authv1.Role_ROLE_VIEWER}
	targets := []string{f.users[rbac.Analyst].ID, f.users[rbac.Manager].ID}
	const rounds = 8
	var wg sync.WaitGroup
	errs := make(chan error, 3*rounds*len(targets))
	for i := 0; i < rounds; i++ {
		for j, id := range targets {
			wg.Go(func() {
				_, err := e.client.ChangeUserRole(admin, &authv1.ChangeUserRoleRequest{Id: id, Role: roles[(i+j)%2]})
				errs <- err
			})
			wg.Go(func() {
				_, err := e.client.Login(ctx, &authv1.LoginRequest{Tenant: "busy", Email: "viewer@busy.example", Password: password})
				errs <- err
			})
			wg.Go(func() {
				_, err := e.client.CreateUser(viewer, &authv1.CreateUserRequest{User: &authv1.User{Email: "no@busy.example", Role: authv1.Role_ROLE_VIEWER}, Password: password})
				if status.Code(err) == codes.PermissionDenied {
					err = nil
				} else {
					err = fmt.Errorf("viewer creating a user: %v, want PermissionDenied", err)
				}
				errs <- err
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	count := func(m string, outcome string) int {
		es, _, err := e.svc.ListAuditRecords(ctx, &authn.Principal{TenantID: f.tenant.ID}, auth.AuditFilter{Method: m, Outcome: outcome}, 1000, "")
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	const svc = "/campaignmesh.auth.v1.AuthService/"
	if got := count(svc+"ChangeUserRole", "OK"); got != rounds*len(targets) {
		t.Errorf("%d role change records, want %d", got, rounds*len(targets))
	}
	if want := rounds*len(targets) + len(tenantRoles()); count(svc+"Login", "OK") != want { // and the fixture's one per role
		t.Errorf("%d login records, want %d", count(svc+"Login", "OK"), want)
	}
	if got := count(svc+"CreateUser", "PERMISSION_DENIED"); got != rounds*len(targets) {
		t.Errorf("%d denied creates recorded, want %d", got, rounds*len(targets))
	}
	if ok, err := e.client.VerifyAuditChain(admin, &authv1.VerifyAuditChainRequest{}); err != nil || !ok.GetOk() {
		t.Errorf("chain after concurrent appends: %v %v", ok, err)
	}
}
