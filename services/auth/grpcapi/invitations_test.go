package grpcapi_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

const acceptMethod = "/campaignmesh.auth.v1.AuthService/AcceptInvitation"

// A tenant created through the API becomes usable through the API alone: the operator invites
// its first admin, who accepts, logs in and invites the rest of the team.
func TestOnboardingANewTenantThroughInvitations(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	op := as(e.operator(t))
	tn, err := e.client.CreateTenant(op, &authv1.CreateTenantRequest{Tenant: &authv1.Tenant{Slug: "globex", DisplayName: "Globex"}})
	if err != nil {
		t.Fatal(err)
	}
	created, err := e.client.CreateTenantInvitation(op, &authv1.CreateTenantInvitationRequest{
		TenantId: tn.GetId(), Invitation: &authv1.Invitation{Email: "boss@globex.example", Role: authv1.Role_ROLE_ADMIN},
	})
	if err != nil {
		t.Fatal(err)
	}
	inv := created.GetInvitation()
	if !strings.HasPrefix(created.GetSecret(), "cmi_") || inv.GetTenantId() != tn.GetId() || inv.GetState() != authv1.Invitation_STATE_PENDING ||
		inv.GetRole() != authv1.Role_ROLE_ADMIN || inv.GetCreator() == "" {
		t.Fatalf("created %v", inv)
	}

	// The invitee needs no credential to accept.
	accepted, err := e.client.AcceptInvitation(ctx, &authv1.AcceptInvitationRequest{Token: created.GetSecret(), DisplayName: "Boss", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	boss := accepted.GetUser()
	if accepted.GetTenantSlug() != "globex" || boss.GetTenantId() != tn.GetId() || boss.GetEmail() != "boss@globex.example" ||
		boss.GetRole() != authv1.Role_ROLE_ADMIN || boss.GetState() != authv1.User_STATE_ACTIVE {
		t.Fatalf("accepted %v", accepted)
	}
	bossToken := e.login(t, accepted.GetTenantSlug(), "boss@globex.example", password)
	who, err := e.client.WhoAmI(as(bossToken), &authv1.WhoAmIRequest{})
	if err != nil || who.GetRole() != authv1.Role_ROLE_ADMIN || who.GetTenantId() != tn.GetId() || who.GetSubject() != boss.GetId() {
		t.Fatalf("whoami of the new admin = %v, %v", who, err)
	}

	// The token works once.
	_, err = e.client.AcceptInvitation(ctx, &authv1.AcceptInvitationRequest{Token: created.GetSecret(), Password: password})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("second accept: %v, want FailedPrecondition", err)
	}

	// The new admin invites a manager (a role within their own permissions).
	admin := as(bossToken)
	mgr, err := e.client.CreateInvitation(admin, &authv1.CreateInvitationRequest{Invitation: &authv1.Invitation{Email: "mgr@globex.example", Role: authv1.Role_ROLE_MANAGER}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.AcceptInvitation(ctx, &authv1.AcceptInvitationRequest{Token: mgr.GetSecret(), Password: password}); err != nil {
		t.Fatal(err)
	}
	who, err = e.client.WhoAmI(as(e.login(t, "globex", "mgr@globex.example", password)), &authv1.WhoAmIRequest{})
	if err != nil || who.GetRole() != authv1.Role_ROLE_MANAGER {
		t.Fatalf("whoami of the manager = %v, %v", who, err)
	}
	list, err := e.client.ListInvitations(admin, &authv1.ListInvitationsRequest{})
	if err != nil || len(list.GetInvitations()) != 2 {
		t.Fatalf("list: %v %v", list, err)
	}
	for _, i := range list.GetInvitations() {
		if i.GetState() != authv1.Invitation_STATE_ACCEPTED || i.GetUserId() == "" || i.GetAcceptTime() == nil {
			t.Errorf("listed %v, want accepted", i)
		}
	}

	// Audit: the operator's invitation in the platform's chain, the accepts in the tenant's, with
	// the new user as actor and the invitation as resource; no record holds a token.
	ops := e.records(t, "", "/campaignmesh.auth.v1.AuthService/CreateTenantInvitation")
	if len(ops) != 1 || ops[0].Resource != inv.GetId() || ops[0].OutcomeName != "OK" {
		t.Fatalf("CreateTenantInvitation records: %+v", ops)
	}
	accepts := e.records(t, tn.GetId(), acceptMethod)
	if len(accepts) != 3 {
		t.Fatalf("accept records in the tenant's chain: %d, want 3 (two accepts, one refused)", len(accepts))
	}
	if r := accepts[0]; r.Actor != boss.GetId() || r.ActorKind != "user" || r.Resource != inv.GetId() || r.OutcomeName != "OK" || r.TenantID != tn.GetId() {
		t.Fatalf("accept record = %+v", r)
	}
	if r := accepts[1]; r.OutcomeName != "FAILED_PRECONDITION" || r.Resource != inv.GetId() {
		t.Fatalf("refused second accept record = %+v", r)
	}
	var leaked int
	if err := e.store.Pool().QueryRow(ctx, `SELECT count(*) FROM audit_records a WHERE position('cmi_' in a::text) > 0`).Scan(&leaked); err != nil || leaked != 0 {
		t.Fatalf("%d audit records hold a token (%v)", leaked, err)
	}
	res, err := e.client.VerifyAuditChain(admin, &authv1.VerifyAuditChainRequest{})
	if err != nil || !res.GetOk() {
		t.Fatalf("tenant chain: %v %v", res, err)
	}
}

// Tokens that do not work: revoked ones answer exactly like unknown and malformed ones; expired
// and used ones say so (only a holder of the real token can tell).
func TestAcceptInvitationRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	f := e.tenantWithRoles(t, "refuse")
	admin := as(f.tokens[rbac.Admin])
	invite := func(email string) *authv1.CreateInvitationResponse {
		r, err := e.client.CreateInvitation(admin, &authv1.CreateInvitationRequest{Invitation: &authv1.Invitation{Email: email, Role: authv1.Role_ROLE_VIEWER}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	accept := func(token string) error {
		_, err := e.client.AcceptInvitation(ctx, &authv1.AcceptInvitationRequest{Token: token, Password: password})
		return err
	}
	revoked := invite("revoked@refuse.example")
	r, err := e.client.RevokeInvitation(admin, &authv1.RevokeInvitationRequest{Id: revoked.GetInvitation().GetId()})
	if err != nil || r.GetState() != authv1.Invitation_STATE_REVOKED || r.GetRevokeTime() == nil {
		t.Fatalf("revoke: %v %v", r, err)
	}
	want := status.Convert(accept(revoked.GetSecret())).Proto()
	if codes.Code(want.GetCode()) != codes.NotFound {
		t.Fatalf("revoked token: %v, want NotFound", want)
	}
	secret := revoked.GetSecret()[len(revoked.GetSecret())-43:]
	for name, token := range map[string]string{
		"unknown":   "cmi_" + strings.Repeat("0f", 16) + "_" + secret,
		"malformed": "cmi_x",
		"empty":     "",
		"forged":    revoked.GetSecret()[:len(revoked.GetSecret())-43] + strings.Repeat("B", 43),
	} {
		if got := status.Convert(accept(token)).Proto(); !proto.Equal(got, want) {
			t.Errorf("%s token answers %v, want the revoked answer %v", name, got, want)
		}
	}

	expired := invite("expired@refuse.example")
	if _, err := e.store.Pool().Exec(ctx, `UPDATE invitations SET expire_time = now() - interval '1 second' WHERE id = $1`, expired.GetInvitation().GetId()); err != nil {
		t.Fatal(err)
	}
	if err := accept(expired.GetSecret()); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("expired token: %v, want FailedPrecondition", err)
	}
	list, err := e.client.ListInvitations(admin, &authv1.ListInvitationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]authv1.Invitation_State{}
	for _, i := range list.GetInvitations() {
		states[i.GetEmail()] = i.GetState()
	}
	if states["expired@refuse.example"] != authv1.Invitation_STATE_EXPIRED || states["revoked@refuse.example"] != authv1.Invitation_STATE_REVOKED {
		t.Fatalf("listed states %v", states)
	}

	// Password and name rules are CreateUser's.
	fresh := invite("fresh@refuse.example")
	_, err = e.client.AcceptInvitation(ctx, &authv1.AcceptInvitationRequest{Token: fresh.GetSecret(), Password: "short"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("short password: %v", err)
	}
	// An email that became a user in the meantime.
	if _, err := e.client.CreateUser(admin, &authv1.CreateUserRequest{User: &authv1.User{Email: "fresh@refuse.example", Role: authv1.Role_ROLE_VIEWER}, Password: password}); err != nil {
		t.Fatal(err)
	}
	if err := accept(fresh.GetSecret()); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("accept for an existing user: %v, want AlreadyExists", err)
	}
}

func TestInvitationDelegationAndTenantRules(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	op := as(e.operator(t))
	a, b := e.tenantWithRoles(t, "tenant-a"), e.tenantWithRoles(t, "tenant-b")
	adminA := as(a.tokens[rbac.Admin])
	invitation := func(role authv1.Role, email string) *authv1.CreateInvitationRequest {
		return &authv1.CreateInvitationRequest{Invitation: &authv1.Invitation{Email: email, Role: role}}
	}

	// An API key holding only users.manage cannot invite beyond its own permissions.
	key, err := e.client.CreateApiKey(adminA, &authv1.CreateApiKeyRequest{Name: "hr", Scopes: []string{"users.manage"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.CreateInvitation(as(key.GetSecret()), invitation(authv1.Role_ROLE_ADMIN, "esc@tenant-a.example")); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("users.manage-only key invites an admin: %v, want PermissionDenied", err)
	}
	if _, err := e.client.CreateInvitation(adminA, invitation(authv1.Role_ROLE_MANAGER, "m@tenant-a.example")); err != nil {
		t.Fatalf("admin invites a manager: %v", err)
	}
	// The operator grants any tenant role through CreateTenantInvitation, not CreateInvitation.
	if _, err := e.client.CreateInvitation(op, invitation(authv1.Role_ROLE_ADMIN, "x@tenant-a.example")); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("operator's CreateInvitation: %v, want PermissionDenied", err)
	}
	if _, err := e.client.CreateTenantInvitation(adminA, &authv1.CreateTenantInvitationRequest{TenantId: a.tenant.ID, Invitation: &authv1.Invitation{Email: "y@tenant-a.example", Role: authv1.Role_ROLE_ADMIN}}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("admin's CreateTenantInvitation: %v, want PermissionDenied", err)
	}
	_, err = e.client.CreateTenantInvitation(op, &authv1.CreateTenantInvitationRequest{TenantId: a.tenant.ID, Invitation: &authv1.Invitation{Email: "z@tenant-a.example", Role: authv1.Role_ROLE_PLATFORM_OPERATOR}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("operator invites an operator: %v, want InvalidArgument", err)
	}

	// Tenant isolation: B's invitations are invisible to A's admin.
	invB, err := e.client.CreateInvitation(as(b.tokens[rbac.Admin]), invitation(authv1.Role_ROLE_VIEWER, "v@tenant-b.example"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.RevokeInvitation(adminA, &authv1.RevokeInvitationRequest{Id: invB.GetInvitation().GetId()}); status.Code(err) != codes.NotFound {
		t.Fatalf("revoke another tenant's invitation: %v, want NotFound", err)
	}
	listA, err := e.client.ListInvitations(adminA, &authv1.ListInvitationsRequest{})
	if err != nil || len(listA.GetInvitations()) != 1 || listA.GetInvitations()[0].GetTenantId() != a.tenant.ID {
		t.Fatalf("tenant A lists %v %v", listA, err)
	}

	// A suspended tenant takes no invitations.
	if _, err := e.client.SuspendTenant(op, &authv1.SuspendTenantRequest{Id: b.tenant.ID}); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.CreateTenantInvitation(op, &authv1.CreateTenantInvitationRequest{TenantId: b.tenant.ID, Invitation: &authv1.Invitation{Email: "late@tenant-b.example", Role: authv1.Role_ROLE_ADMIN}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("invite into a suspended tenant: %v, want FailedPrecondition", err)
	}
	if _, err := e.client.AcceptInvitation(ctx, &authv1.AcceptInvitationRequest{Token: invB.GetSecret(), Password: password}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("accept into a suspended tenant: %v, want FailedPrecondition", err)
	}

	// Expiry: at most 30 days.
	_, err = e.client.CreateInvitation(adminA, &authv1.CreateInvitationRequest{Invitation: &authv1.Invitation{
		Email: "long@tenant-a.example", Role: authv1.Role_ROLE_VIEWER, ExpireTime: timestamppb.New(time.Now().Add(31 * 24 * time.Hour)),
	}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("31-day invitation: %v, want InvalidArgument", err)
	}
}

func TestCreateInvitationIsIdempotentWithoutReplayingTheToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	op := as(e.operator(t))
	f := e.tenantWithRoles(t, "idem-inv")
	admin := as(f.tokens[rbac.Admin])
	req := &authv1.CreateInvitationRequest{Invitation: &authv1.Invitation{Email: "once@idem-inv.example", Role: authv1.Role_ROLE_ANALYST}, RequestId: "inv-1"}
	first, err := e.client.CreateInvitation(admin, req)
	if err != nil || first.GetSecret() == "" {
		t.Fatalf("create: %v %v", first, err)
	}
	again, err := e.client.CreateInvitation(admin, req)
	if err != nil || again.GetInvitation().GetId() != first.GetInvitation().GetId() || again.GetSecret() != "" {
		t.Fatalf("retry = %v, %v; want the same invitation without its token", again, err)
	}
	treq := &authv1.CreateTenantInvitationRequest{TenantId: f.tenant.ID, Invitation: &authv1.Invitation{Email: "op@idem-inv.example", Role: authv1.Role_ROLE_ADMIN}, RequestId: "inv-1"}
	t1, err := e.client.CreateTenantInvitation(op, treq)
	if err != nil {
		t.Fatal(err)
	}
	t2, err := e.client.CreateTenantInvitation(op, treq)
	if err != nil || t2.GetInvitation().GetId() != t1.GetInvitation().GetId() || t2.GetSecret() != "" {
		t.Fatalf("operator retry = %v, %v", t2, err)
	}
	list, err := e.client.ListInvitations(admin, &authv1.ListInvitationsRequest{})
	if err != nil || len(list.GetInvitations()) != 2 {
		t.Fatalf("invitations after retries: %v %v; want 2", list, err)
	}
	var kept int
	if err := e.store.Pool().QueryRow(t.Context(), `SELECT count(*) FROM idempotency_keys WHERE position($1::bytea in response) > 0 OR position($2::bytea in response) > 0`,
		[]byte(first.GetSecret()), []byte(t1.GetSecret())).Scan(&kept); err != nil || kept != 0 {
		t.Fatalf("a token is kept in the idempotency table (%d rows, %v)", kept, err)
	}
	// The first token is still the one that works.
	if _, err := e.client.AcceptInvitation(context.Background(), &authv1.AcceptInvitationRequest{Token: first.GetSecret(), Password: password}); err != nil {
		t.Fatal(err)
	}
}
