package grpcapi_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit/auditpb"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

// records returns the audit records of a chain ("" for the platform) for one method.
func (e *env) records(t *testing.T, chain, method string) []auth.AuditEntry {
	t.Helper()
	es, _, err := e.svc.ListAuditRecords(context.Background(), &authn.Principal{TenantID: chain}, auth.AuditFilter{Method: method}, 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func TestEveryAuditedRPCWritesExactlyOneRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	op := e.operator(t)
	f := e.tenantWithRoles(t, "audited")
	admin := as(f.tokens[rbac.Admin])
	ctx := context.Background()
	victim := func(email string) string {
		u, err := e.client.CreateUser(admin, &authv1.CreateUserRequest{User: &authv1.User{Email: email, Role: authv1.Role_ROLE_VIEWER}, Password: password})
		if err != nil {
			t.Fatal(err)
		}
		return u.GetId()
	}
	session := e.loginFull(t, "audited", "analyst@audited.example", password)
	key, err := e.client.CreateApiKey(admin, &authv1.CreateApiKeyRequest{Name: "k", Scopes: []string{"users.read"}})
	if err != nil {
		t.Fatal(err)
	}
	tenant := f.tenant.ID
	billed, err := e.svc.CreateTenant(ctx, "billed", "Billed")
	if err != nil {
		t.Fatal(err)
	}
	// One call per audited RPC, and the chain its record belongs to.
	calls := map[string]struct {
		chain string
		call  func() error
	}{
		"Login": {tenant, func() error {
			_, err := e.client.Login(ctx, &authv1.LoginRequest{Tenant: "audited", Email: "viewer@audited.example", Password: password})
			return err
		}},
		"Refresh": {tenant, func() error {
			_, err := e.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: session.GetRefreshToken()})
			return err
		}},
		"Logout": {tenant, func() error {
			s := e.loginFull(t, "audited", "manager@audited.example", password)
			before := len(e.records(t, tenant, "/campaignmesh.auth.v1.AuthService/Logout"))
			_, err := e.client.Logout(ctx, &authv1.LogoutRequest{RefreshToken: s.GetRefreshToken()})
			if got := len(e.records(t, tenant, "/campaignmesh.auth.v1.AuthService/Logout")); got != before+1 {
				t.Errorf("Logout wrote %d records", got-before)
			}
			return err
		}},
		"ChangePassword": {tenant, func() error {
			_, err := e.client.ChangePassword(as(f.tokens[rbac.Viewer]), &authv1.ChangePasswordRequest{CurrentPassword: password, NewPassword: "another long password"})
			return err
		}},
		"RotateSigningKey": {"", func() error {
			_, err := e.client.RotateSigningKey(as(op), &authv1.RotateSigningKeyRequest{})
			return err
		}},
		"CreateTenant": {"", func() error {
			_, err := e.client.CreateTenant(as(op), &authv1.CreateTenantRequest{Tenant: &authv1.Tenant{Slug: "made", DisplayName: "Made"}})
			return err
		}},
		"SuspendTenant": {"", func() error {
			_, err := e.client.SuspendTenant(as(op), &authv1.SuspendTenantRequest{Id: mustTenantID(t, e, op, "made")})
			return err
		}},
		"SuspendTenantForBilling": {billed.ID, func() error {
			_, err := e.clientAs(t, "billing").SuspendTenantForBilling(ctx, &authv1.SuspendTenantForBillingRequest{TenantId: billed.ID, Reason: "grace period over"})
			return err
		}},
		"CreateUser": {tenant, func() error { victim("created@audited.example"); return nil }},
		"DisableUser": {tenant, func() error {
			_, err := e.client.DisableUser(admin, &authv1.DisableUserRequest{Id: victim("disabled@audited.example")})
			return err
		}},
		"ChangeUserRole": {tenant, func() error {
			_, err := e.client.ChangeUserRole(admin, &authv1.ChangeUserRoleRequest{Id: victim("role@audited.example"), Role: authv1.Role_ROLE_ANALYST})
			return err
		}},
		"RevokeUserSessions": {tenant, func() error {
			_, err := e.client.RevokeUserSessions(admin, &authv1.RevokeUserSessionsRequest{Id: f.users[rbac.Manager].ID})
			return err
		}},
		"UnlockUser": {tenant, func() error {
			_, err := e.client.UnlockUser(admin, &authv1.UnlockUserRequest{Id: f.users[rbac.Viewer].ID})
			return err
		}},
		"CreateInvitation": {tenant, func() error {
			_, err := e.client.CreateInvitation(admin, &authv1.CreateInvitationRequest{Invitation: &authv1.Invitation{Email: "inv1@audited.example", Role: authv1.Role_ROLE_VIEWER}})
			return err
		}},
		"CreateTenantInvitation": {"", func() error {
			_, err := e.client.CreateTenantInvitation(as(op), &authv1.CreateTenantInvitationRequest{TenantId: tenant, Invitation: &authv1.Invitation{Email: "inv2@audited.example", Role: authv1.Role_ROLE_ADMIN}})
			return err
		}},
		"RevokeInvitation": {tenant, func() error {
			inv, err := e.client.CreateInvitation(admin, &authv1.CreateInvitationRequest{Invitation: &authv1.Invitation{Email: "inv3@audited.example", Role: authv1.Role_ROLE_VIEWER}})
			if err != nil {
				return err
			}
			_, err = e.client.RevokeInvitation(admin, &authv1.RevokeInvitationRequest{Id: inv.GetInvitation().GetId()})
			return err
		}},
		"AcceptInvitation": {tenant, func() error {
			inv, err := e.client.CreateInvitation(admin, &authv1.CreateInvitationRequest{Invitation: &authv1.Invitation{Email: "inv4@audited.example", Role: authv1.Role_ROLE_VIEWER}})
			if err != nil {
				return err
			}
			_, err = e.client.AcceptInvitation(ctx, &authv1.AcceptInvitationRequest{Token: inv.GetSecret(), Password: password})
			return err
		}},
		"CreateApiKey": {tenant, func() error {
			_, err := e.client.CreateApiKey(admin, &authv1.CreateApiKeyRequest{Name: "k2", Scopes: []string{"users.read"}})
			return err
		}},
		"RevokeApiKey": {tenant, func() error {
			_, err := e.client.RevokeApiKey(admin, &authv1.RevokeApiKeyRequest{Id: key.GetApiKey().GetId()})
			return err
		}},
	}
	sd := authv1.File_campaignmesh_auth_v1_service_proto.Services().ByName("AuthService")
	for i := 0; i < sd.Methods().Len(); i++ {
		md := sd.Methods().Get(i)
		rule, _ := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule)
		if !rule.GetAudit() {
			continue
		}
		name := string(md.Name())
		method := "/campaignmesh.auth.v1.AuthService/" + name
		c, ok := calls[name]
		if !ok {
			t.Errorf("%s is audited but this test does not call it", name)
			continue
		}
		before := len(e.records(t, c.chain, method))
		if err := c.call(); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		after := e.records(t, c.chain, method)
		if len(after) != before+1 {
			t.Errorf("%s wrote %d records to its chain, want exactly 1", name, len(after)-before)
			continue
		}
		r := after[len(after)-1]
		if r.OutcomeName != "OK" || r.RequestID == "" || r.ClientAddress == "" || r.Service != "auth" || r.Actor == "" || r.Hash == "" {
			t.Errorf("%s record is incomplete: %+v", name, r)
		}
	}
	// A denied mutation is recorded too, with its outcome and actor. (The viewer changed its
	// password above, which revoked its earlier token.)
	viewer := e.login(t, "audited", "viewer@audited.example", "another long password")
	_, _ = e.client.CreateUser(as(viewer), &authv1.CreateUserRequest{User: &authv1.User{Email: "no@audited.example", Role: authv1.Role_ROLE_VIEWER}, Password: password})
	denied, _, err := e.svc.ListAuditRecords(ctx, &authn.Principal{TenantID: tenant}, auth.AuditFilter{Outcome: "PERMISSION_DENIED", Actor: f.users[rbac.Viewer].ID}, 10, "")
	if err != nil || len(denied) != 1 || !strings.HasSuffix(denied[0].Method, "/CreateUser") {
		t.Fatalf("denied CreateUser records: %+v %v", denied, err)
	}
}

func TestAuditLogIsAppendOnlyAndTamperEvident(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "tamper") // one login per tenant role: one record each
	admin := as(f.tokens[rbac.Admin])
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		e.login(t, "tamper", "viewer@tamper.example", password)
	}
	ok, err := e.client.VerifyAuditChain(admin, &authv1.VerifyAuditChainRequest{})
	if err != nil || !ok.GetOk() || ok.GetRecordsChecked() < 7 {
		t.Fatalf("intact chain: %v %v", ok, err)
	}
	// The service's own database role cannot change or remove records.
	for _, stmt := range []string{
		`UPDATE audit_records SET actor = 'mallory' WHERE chain = $1 AND sequence = 3`,
		`DELETE FROM audit_records WHERE chain = $1 AND sequence = 3`,
	} {
		if _, err := e.store.Pool().Exec(ctx, stmt, f.tenant.ID); err == nil {
			t.Fatalf("%q succeeded on the append-only audit log", stmt)
		}
	}
	// Someone with DDL rights goes around the protections and edits record 3.
	for _, stmt := range []string{
		`ALTER TABLE audit_records DISABLE TRIGGER audit_records_no_update`,
		`GRANT UPDATE ON audit_records TO CURRENT_USER`,
	} {
		if _, err := e.store.Pool().Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.store.Pool().Exec(ctx, `UPDATE audit_records SET actor = 'mallory' WHERE chain = $1 AND sequence = 3`, f.tenant.ID); err != nil {
		t.Fatal(err)
	}
	got, err := e.client.VerifyAuditChain(admin, &authv1.VerifyAuditChainRequest{})
	if err != nil || got.GetOk() || got.GetFirstBrokenSequence() != 3 || got.GetRecordsChecked() != 2 {
		t.Fatalf("after tampering with record 3: %v %v", got, err)
	}
	// Removing a record breaks the chain at the gap.
	if _, err := e.store.Pool().Exec(ctx, `GRANT DELETE ON audit_records TO CURRENT_USER`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Pool().Exec(ctx, `DELETE FROM audit_records WHERE chain = $1 AND sequence <= 3`, f.tenant.ID); err != nil {
		t.Fatal(err)
	}
	got, err = e.client.VerifyAuditChain(admin, &authv1.VerifyAuditChainRequest{})
	if err != nil || got.GetOk() || got.GetFirstBrokenSequence() != 1 {
		t.Fatalf("after deleting records 1-3: %v %v", got, err)
	}
}

func TestAuditListFiltersAndPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "listing")
	other := e.tenantWithRoles(t, "elsewhere")
	admin := as(f.tokens[rbac.Admin])
	for i := 0; i < 5; i++ {
		e.login(t, "listing", "viewer@listing.example", password)
	}
	var all []*authv1.AuditRecord
	token := ""
	for pages := 0; pages < 10; pages++ {
		resp, err := e.client.ListAuditRecords(admin, &authv1.ListAuditRecordsRequest{
			Method: "/campaignmesh.auth.v1.AuthService/Login", Actor: f.users[rbac.Viewer].ID, PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, resp.GetRecords()...)
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(all) != 6 { // the fixture's login and five more
		t.Fatalf("listed %d viewer logins, want 6", len(all))
	}
	for i, r := range all {
		if r.GetTenantId() != f.tenant.ID || (i > 0 && r.GetSequence() <= all[i-1].GetSequence()) {
			t.Fatalf("record %d out of tenant or order: %v", i, r)
		}
	}
	// Another tenant's admin sees none of them; viewers cannot read the log at all.
	resp, err := e.client.ListAuditRecords(as(other.tokens[rbac.Admin]), &authv1.ListAuditRecordsRequest{Actor: f.users[rbac.Viewer].ID})
	if err != nil || len(resp.GetRecords()) != 0 {
		t.Fatalf("foreign admin sees %d records (%v)", len(resp.GetRecords()), err)
	}
}

// A service other than auth records through its outbox; with auth down its mutation still
// succeeds, and the record reaches the audit log once auth is back — exactly once.
func TestAuditRecordsSurviveAnAuthOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "outage")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	pool, err := pgdb.Open(ctx, pgtest.NewDatabase(t)) // the other service's own database
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	outbox, err := auditpg.NewOutbox(ctx, pool, e.clientAs(t, "campaigns"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = outbox.Run(ctx) }()

	probe := grpcserver.New(
		grpcserver.WithService("campaigns"),
		grpcserver.WithLogger(slog.New(slog.DiscardHandler)),
		grpcserver.WithTLS(mtlstest.Source(t, e.ca, "campaigns").ServerConfig()),
		grpcserver.WithVerifier(authn.Verifier{Tokens: authn.NewJWTVerifier(e.svc.Keys())}),
		grpcserver.WithAuditor(outbox),
	)
	campaignsv1.RegisterCampaignServiceServer(probe.GRPC(), campaignsStub{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = probe.Serve(ctx, lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(mtlstest.Source(t, e.ca, "gateway").ClientConfig("campaigns"))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	e.stop() // auth goes down
	method := campaignsv1.CampaignService_DeleteCampaign_FullMethodName
	if _, err := campaignsv1.NewCampaignServiceClient(conn).DeleteCampaign(as(f.tokens[rbac.Admin]), &campaignsv1.DeleteCampaignRequest{Id: "c-1"}); err != nil {
		t.Fatalf("mutation with auth down: %v", err)
	}
	if n, err := outbox.Pending(ctx); err != nil || n != 1 {
		t.Fatalf("outbox holds %d records (%v), want 1", n, err)
	}

	e.serve(t) // auth is back
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, _ := outbox.Pending(ctx)
		if n == 0 && len(e.records(t, f.tenant.ID, method)) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after auth came back: %d pending, %d stored", n, len(e.records(t, f.tenant.ID, method)))
		}
		time.Sleep(100 * time.Millisecond) // polling under a deadline
	}
	recs := e.records(t, f.tenant.ID, method)
	r := recs[0]
	if r.Service != "campaigns" || r.Actor != f.users[rbac.Admin].ID || r.OutcomeName != "OK" {
		t.Fatalf("delivered record: %+v", r)
	}
	// A redelivery (say the outbox crashed before deleting) is skipped.
	again, err := e.clientAs(t, "campaigns").AppendAuditRecords(ctx, &authv1.AppendAuditRecordsRequest{Records: []*authv1.AuditRecord{auditpb.ToProto(r.Record)}})
	if err != nil || again.GetDuplicates() != 1 || again.GetAppended() != 0 {
		t.Fatalf("redelivery: %v %v", again, err)
	}
	if n := len(e.records(t, f.tenant.ID, method)); n != 1 {
		t.Fatalf("%d records after redelivery, want 1", n)
	}
}

// campaignsStub stands for the campaigns service: one audited mutation that succeeds.
type campaignsStub struct {
	campaignsv1.UnimplementedCampaignServiceServer
}

func (campaignsStub) DeleteCampaign(context.Context, *campaignsv1.DeleteCampaignRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// A mesh service can append only records it could have made: its own methods, its own name as
// the service, tenants that exist and actors of the record's tenant. Test identities are not
// admitted at all.
func TestAppendAuditRecordsRefusesForgedRecords(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "forge")
	other := e.tenantWithRoles(t, "forge-other")
	campaigns := e.clientAs(t, "campaigns")
	method := campaignsv1.CampaignService_DeleteCampaign_FullMethodName
	record := func(mod func(r *authv1.AuditRecord)) *authv1.AuditRecord {
		r := auditpb.ToProto(audit.Record{
			ID: uuid(t), Time: time.Now(), Method: method, TenantID: f.tenant.ID,
			Actor: f.users[rbac.Admin].ID, ActorKind: "access_token", Service: "campaigns",
		})
		mod(r)
		return r
	}
	for name, mod := range map[string]func(r *authv1.AuditRecord){
		"another service's method":         func(r *authv1.AuditRecord) { r.Method = "/campaignmesh.auth.v1.AuthService/CreateUser" },
		"a user of another tenant":         func(r *authv1.AuditRecord) { r.Actor = other.users[rbac.Admin].ID },
		"a user that does not exist":       func(r *authv1.AuditRecord) { r.Actor = uuid(t) },
		"a tenant that does not exist":     func(r *authv1.AuditRecord) { r.TenantId = uuid(t) },
		"an API key that does not exist":   func(r *authv1.AuditRecord) { r.ActorKind, r.Actor = "api_key", uuid(t) },
		"another service as actor":         func(r *authv1.AuditRecord) { r.ActorKind, r.Actor = "service", "service:auth" },
		"an anonymous record with a actor": func(r *authv1.AuditRecord) { r.ActorKind = "anonymous" },
		"an unknown actor kind":            func(r *authv1.AuditRecord) { r.ActorKind = "root" },
		"a time in the future":             func(r *authv1.AuditRecord) { r.Time = timestamppb.New(time.Now().Add(time.Hour)) },
	} {
		good := record(func(*authv1.AuditRecord) {})
		_, err := campaigns.AppendAuditRecords(context.Background(), &authv1.AppendAuditRecordsRequest{Records: []*authv1.AuditRecord{good, record(mod)}})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: err = %v, want PermissionDenied", name, err)
		}
		if n := len(e.records(t, f.tenant.ID, method)) + len(e.records(t, other.tenant.ID, method)); n != 0 {
			t.Fatalf("%s: %d records stored from a refused call", name, n)
		}
	}

	// A record that names another service is stored as the caller's.
	claimed := record(func(r *authv1.AuditRecord) { r.Service = "auth" })
	if _, err := campaigns.AppendAuditRecords(context.Background(), &authv1.AppendAuditRecordsRequest{Records: []*authv1.AuditRecord{
		claimed,
		record(func(r *authv1.AuditRecord) { r.ActorKind, r.Actor = "service", "service:campaigns" }),
		record(func(r *authv1.AuditRecord) { r.TenantId, r.ActorKind, r.Actor = "", "anonymous", "" }),
	}}); err != nil {
		t.Fatal(err)
	}
	recs := e.records(t, f.tenant.ID, method)
	if len(recs) != 2 || recs[0].Service != "campaigns" || recs[1].Service != "campaigns" {
		t.Fatalf("stored %+v, want two records of service campaigns", recs)
	}

	// The test identity of the platform's own tests is no caller of any production RPC.
	_, err := e.clientAs(t, "meshtest").AppendAuditRecords(context.Background(), &authv1.AppendAuditRecordsRequest{Records: []*authv1.AuditRecord{record(func(*authv1.AuditRecord) {})}})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("meshtest identity: %v, want PermissionDenied", err)
	}
}

func uuid(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
