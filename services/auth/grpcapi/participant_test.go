package grpcapi_test

import (
	"context"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/access"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

// participantAs returns a ParticipantService client with the mesh identity service.
func (e *env) participantAs(t *testing.T, service string) dsrv1.ParticipantServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(mtlstest.Source(t, e.ca, service).ClientConfig("auth"))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return dsrv1.NewParticipantServiceClient(conn)
}

func email(v string) *dsrv1.Identifier {
	return &dsrv1.Identifier{Kind: dsrv1.Identifier_KIND_EMAIL, Value: v}
}

// export collects a whole export, by record type.
func export(t *testing.T, c dsrv1.ParticipantServiceClient, req *dsrv1.ExportSubjectRequest) map[string][]*dsrv1.ExportSubjectResponse {
	t.Helper()
	stream, err := c.ExportSubject(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*dsrv1.ExportSubjectResponse{}
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("export: %v", err)
		}
		out[r.GetType()] = append(out[r.GetType()], r)
	}
}

// Only dsr may call ParticipantService: every method × every mesh identity, and users through
// the gateway, derived from the methods' access rules.
func TestParticipantServiceCallers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "callers")
	ids := []*dsrv1.Identifier{email("nobody@callers.example")}
	requests := map[string]proto.Message{
		"ResolveSubject": &dsrv1.ResolveSubjectRequest{TenantId: f.tenant.ID, DsrRequest: "dsr_callers", Identifiers: ids},
		"ExportSubject":  &dsrv1.ExportSubjectRequest{TenantId: f.tenant.ID, DsrRequest: "dsr_callers", Identifiers: ids},
		"StartErasure":   &dsrv1.StartErasureRequest{TenantId: f.tenant.ID, DsrRequest: "dsr_callers", Identifiers: ids},
		"GetErasure":     &dsrv1.GetErasureRequest{TenantId: f.tenant.ID, DsrRequest: "dsr_callers"},
	}
	call := func(c dsrv1.ParticipantServiceClient, ctx context.Context, method string) codes.Code {
		var err error
		switch req := requests[method].(type) {
		case *dsrv1.ResolveSubjectRequest:
			_, err = c.ResolveSubject(ctx, req)
		case *dsrv1.ExportSubjectRequest:
			var stream grpc.ServerStreamingClient[dsrv1.ExportSubjectResponse]
			if stream, err = c.ExportSubject(ctx, req); err == nil {
				for err == nil {
					_, err = stream.Recv()
				}
				if err == io.EOF {
					err = nil
				}
			}
		case *dsrv1.StartErasureRequest:
			_, err = c.StartErasure(ctx, req)
		case *dsrv1.GetErasureRequest:
			_, err = c.GetErasure(ctx, req)
		default:
			t.Fatalf("%s has no request", method)
		}
		return status.Code(err)
	}
	sd := dsrv1.File_campaignmesh_dsr_v1_participant_proto.Services().ByName("ParticipantService")
	// StartErasure first, so GetErasure then finds the erasure.
	methods := []string{"ResolveSubject", "ExportSubject", "StartErasure", "GetErasure"}
	if sd.Methods().Len() != len(methods) {
		t.Fatalf("ParticipantService has %d methods, the test knows %d", sd.Methods().Len(), len(methods))
	}
	for _, method := range methods {
		rule, _ := proto.GetExtension(sd.Methods().ByName(protoreflect.Name(method)).Options(), accessv1.E_Rule).(*accessv1.Rule)
		for _, id := range access.MeshIdentities {
			want := codes.PermissionDenied
			if slices.Contains(rule.GetCallers().GetServices(), id) {
				want = codes.OK
			}
			if got := call(e.participantAs(t, id), context.Background(), method); got != want {
				t.Errorf("%s as mesh service %s: %v, want %v", method, id, got, want)
			}
		}
		// A user's credential, even relayed by an allowed service, is never a caller.
		for _, r := range tenantRoles() {
			for _, relay := range []string{"gateway", "dsr"} {
				if got := call(e.participantAs(t, relay), as(f.tokens[r]), method); got != codes.PermissionDenied {
					t.Errorf("%s as %s through %s: %v, want PermissionDenied", method, r, relay, got)
				}
			}
		}
	}
}

func TestParticipantRefusesBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "badinput")
	dsr := e.participantAs(t, "dsr")
	ctx := context.Background()
	for name, req := range map[string]*dsrv1.StartErasureRequest{
		"no identifiers":       {TenantId: f.tenant.ID, DsrRequest: "dsr_1"},
		"tenant not an id":     {TenantId: "acme", DsrRequest: "dsr_1", Identifiers: []*dsrv1.Identifier{email("a@b.example")}},
		"no tenant":            {DsrRequest: "dsr_1", Identifiers: []*dsrv1.Identifier{email("a@b.example")}},
		"no dsr request":       {TenantId: f.tenant.ID, Identifiers: []*dsrv1.Identifier{email("a@b.example")}},
		"unspecified kind":     {TenantId: f.tenant.ID, DsrRequest: "dsr_1", Identifiers: []*dsrv1.Identifier{{Value: "a@b.example"}}},
		"empty value":          {TenantId: f.tenant.ID, DsrRequest: "dsr_1", Identifiers: []*dsrv1.Identifier{email("")}},
		"value too long":       {TenantId: f.tenant.ID, DsrRequest: "dsr_1", Identifiers: []*dsrv1.Identifier{email(strings.Repeat("a", 257))}},
		"too many identifiers": {TenantId: f.tenant.ID, DsrRequest: "dsr_1", Identifiers: slices.Repeat([]*dsrv1.Identifier{email("a@b.example")}, 1001)},
	} {
		if _, err := dsr.StartErasure(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: StartErasure %v, want InvalidArgument", name, err)
		}
		if _, err := dsr.ResolveSubject(ctx, &dsrv1.ResolveSubjectRequest{TenantId: req.TenantId, DsrRequest: req.DsrRequest, Identifiers: req.Identifiers}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: ResolveSubject %v, want InvalidArgument", name, err)
		}
	}
	if _, err := dsr.GetErasure(ctx, &dsrv1.GetErasureRequest{TenantId: f.tenant.ID, DsrRequest: "dsr_never"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetErasure of an erasure never started: %v, want NotFound", err)
	}
}

// subject is a tenant admin with everything auth keeps about a person: two sessions (one
// refreshed), an API key, audit records, and the same email as a user of another tenant.
type subject struct {
	f            tenantFixture
	user         auth.User
	token        string // an access token of the user
	refresh      string // a live refresh token
	keySecret    string
	keyID        string
	keyPrefix    string
	otherTenant  tenantFixture
	otherUser    auth.User
	auditRecords int
}

const subjectEmail = "Ann.Subject@Subj.example"

func newSubject(t *testing.T, e *env, slug string) subject {
	t.Helper()
	ctx := context.Background()
	s := subject{f: e.tenantWithRoles(t, slug), otherTenant: e.tenantWithRoles(t, slug+"-other")}
	var err error
	s.user, err = e.svc.CreateUser(ctx, adminOf(s.f.tenant.ID), auth.User{Email: subjectEmail, DisplayName: "Ann Subject", Role: rbac.Admin}, password)
	if err != nil {
		t.Fatal(err)
	}
	s.otherUser, err = e.svc.CreateUser(ctx, adminOf(s.otherTenant.tenant.ID), auth.User{Email: strings.ToLower(subjectEmail), DisplayName: "Ann Elsewhere", Role: rbac.Viewer}, password)
	if err != nil {
		t.Fatal(err)
	}
	// Login as the subject (any case, as login matches), twice; the second session refreshed.
	first := e.loginFull(t, slug, strings.ToLower(subjectEmail), password)
	second := e.loginFull(t, slug, subjectEmail, password)
	rotated, err := e.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: second.GetRefreshToken()})
	if err != nil {
		t.Fatal(err)
	}
	s.token, s.refresh = first.GetAccessToken(), rotated.GetRefreshToken()
	k, err := e.client.CreateApiKey(as(s.token), &authv1.CreateApiKeyRequest{Name: "ann's key", Scopes: []string{rbac.CampaignsRead}})
	if err != nil {
		t.Fatal(err)
	}
	s.keySecret, s.keyID = k.GetSecret(), k.GetApiKey().GetId()
	s.keyPrefix = k.GetApiKey().GetSecretPrefix()
	if _, err := e.client.CreateUser(as(s.token), &authv1.CreateUserRequest{User: &authv1.User{Email: "made-by-ann@" + slug + ".example", Role: authv1.Role_ROLE_VIEWER}, Password: password}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Pool().QueryRow(ctx, `SELECT count(*) FROM audit_records WHERE chain = $1 AND actor = $2`, s.f.tenant.ID, s.user.ID).Scan(&s.auditRecords); err != nil {
		t.Fatal(err)
	}
	if s.auditRecords < 4 { // two logins, a refresh, a key, a user
		t.Fatalf("the subject is the actor of %d audit records, want at least 4", s.auditRecords)
	}
	return s
}

func TestParticipantExportsTheStaffUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := newSubject(t, e, "exp")
	ctx := context.Background()
	inv, err := e.client.CreateInvitation(as(s.f.tokens[rbac.Admin]), &authv1.CreateInvitationRequest{Invitation: &authv1.Invitation{Email: "Invited@Exp.example", Role: authv1.Role_ROLE_VIEWER}})
	if err != nil {
		t.Fatal(err)
	}
	dsr := e.participantAs(t, "dsr")

	if r, err := dsr.ResolveSubject(ctx, &dsrv1.ResolveSubjectRequest{TenantId: s.f.tenant.ID, DsrRequest: "dsr_exp", Identifiers: []*dsrv1.Identifier{email(subjectEmail)}}); err != nil || len(r.GetLinked()) != 0 {
		t.Fatalf("ResolveSubject = %v, %v; want no linked identifiers", r, err)
	}

	got := export(t, dsr, &dsrv1.ExportSubjectRequest{TenantId: s.f.tenant.ID, DsrRequest: "dsr_exp", Identifiers: []*dsrv1.Identifier{
		email(strings.ToUpper(subjectEmail)), // case-insensitive, as login
		email("invited@exp.example"),
		{Kind: dsrv1.Identifier_KIND_USER_ID, Value: s.user.ID}, // event identifiers name no staff user
		{Kind: dsrv1.Identifier_KIND_ANONYMOUS_ID, Value: "anon-1"},
	}})
	counts := map[string]int{}
	for typ, rs := range got {
		counts[typ] = len(rs)
	}
	want := map[string]int{"user": 1, "session": 2, "api_key": 1, "audit_record": s.auditRecords, "invitation": 1}
	if !maps.Equal(counts, want) {
		t.Fatalf("export counts %v, want %v", counts, want)
	}
	u := got["user"][0].GetData().AsMap()
	if u["id"] != s.user.ID || u["email"] != subjectEmail || u["display_name"] != "Ann Subject" || u["role"] != "admin" || u["state"] != "active" {
		t.Errorf("user record %v", u)
	}
	k := got["api_key"][0].GetData().AsMap()
	if k["id"] != s.keyID || k["prefix"] != s.keyPrefix || k["name"] != "ann's key" || k["revoke_time"] != nil {
		t.Errorf("api key record %v", k)
	}
	sessions := 0
	for _, r := range got["session"] {
		m := r.GetData().AsMap()
		if m["revoke_time"] == nil && m["expire_time"] != nil && m["create_time"] != nil {
			sessions++
		}
	}
	if sessions != 2 {
		t.Errorf("sessions %v: want 2 live ones with their times", got["session"])
	}
	for _, r := range got["audit_record"] {
		m := r.GetData().AsMap()
		if m["method"] == "" || m["outcome"] == nil || m["time"] == nil {
			t.Errorf("audit record %v", m)
		}
	}
	if i := got["invitation"][0].GetData().AsMap(); i["id"] != inv.GetInvitation().GetId() || i["state"] != "pending" {
		t.Errorf("invitation record %v", i)
	}
	// No secret, and nothing that could stand for one, travels.
	var hashes []string
	rows, err := e.store.Pool().Query(ctx, `SELECT encode(token_hash, 'hex') FROM refresh_tokens WHERE user_id = $1
		UNION ALL SELECT encode(secret_hash, 'hex') FROM api_keys WHERE id = $2
		UNION ALL SELECT encode(secret_hash, 'base64') FROM api_keys WHERE id = $2
		UNION ALL SELECT password_hash FROM users WHERE id = $3`, s.user.ID, s.keyID, s.user.ID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, h)
	}
	for typ, rs := range got {
		for _, r := range rs {
			text, _ := protojson.Marshal(r)
			for _, secret := range append(hashes, s.keySecret, s.refresh, s.token, password) {
				if strings.Contains(string(text), secret) {
					t.Errorf("a %s record holds a secret or hash: %s", typ, text)
				}
			}
			for key := range r.GetData().GetFields() {
				if strings.Contains(key, "hash") || strings.Contains(key, "secret") || strings.Contains(key, "password") {
					t.Errorf("a %s record has field %q", typ, key)
				}
			}
		}
	}

	// Another tenant's export sees only its own user; a platform operator is never matched.
	other := export(t, dsr, &dsrv1.ExportSubjectRequest{TenantId: s.otherTenant.tenant.ID, DsrRequest: "dsr_exp", Identifiers: []*dsrv1.Identifier{email(subjectEmail)}})
	if len(other["user"]) != 1 || other["user"][0].GetData().AsMap()["id"] != s.otherUser.ID || len(other["api_key"]) != 0 {
		t.Errorf("the other tenant's export: %v", other)
	}
	op := readLoginFile(t, e.bootstrap(t)+"/operator.json")
	if none := export(t, dsr, &dsrv1.ExportSubjectRequest{TenantId: s.f.tenant.ID, DsrRequest: "dsr_op", Identifiers: []*dsrv1.Identifier{email(op.GetEmail())}}); len(none) != 0 {
		t.Errorf("the operator's email exported %v", none)
	}
}

func TestParticipantErasesTheStaffUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := newSubject(t, e, "era")
	ctx := context.Background()
	admin := as(s.f.tokens[rbac.Admin])
	if _, err := e.client.CreateInvitation(admin, &authv1.CreateInvitationRequest{Invitation: &authv1.Invitation{Email: "Pending@Era.example", Role: authv1.Role_ROLE_MANAGER}}); err != nil {
		t.Fatal(err)
	}
	// A failed login leaves the account's throttling row behind.
	if _, err := e.client.Login(ctx, &authv1.LoginRequest{Tenant: "era", Email: subjectEmail, Password: "not the password"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("failed login: %v", err)
	}
	opFiles := e.bootstrap(t)
	op := readLoginFile(t, opFiles+"/operator.json")
	dsr := e.participantAs(t, "dsr")
	req := &dsrv1.StartErasureRequest{TenantId: s.f.tenant.ID, DsrRequest: "dsr_era", Identifiers: []*dsrv1.Identifier{
		email(strings.ToUpper(subjectEmail)), email("pending@era.example"), email(op.GetEmail()),
		{Kind: dsrv1.Identifier_KIND_USER_ID, Value: s.user.ID},
	}}
	wantCounts := map[string]int64{"users": 1, "sessions": 2, "api_keys": 1, "invitations": 1}
	check := func(what string, st *dsrv1.ErasureStatus, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !st.GetDone() || st.GetRemaining() != 0 || !maps.Equal(st.GetCounts(), wantCounts) || st.GetMessage() == "" {
			t.Fatalf("%s = %v, want done with counts %v", what, st, wantCounts)
		}
	}
	st, err := dsr.StartErasure(ctx, req)
	check("StartErasure", st, err)

	// The profile is pseudonymous, the email gone from every row of users and invitations.
	var gotEmail, name, state string
	if err := e.store.Pool().QueryRow(ctx, `SELECT email, display_name, state FROM users WHERE id = $1`, s.user.ID).Scan(&gotEmail, &name, &state); err != nil {
		t.Fatal(err)
	}
	if gotEmail != auth.ErasedEmail(s.user.ID) || name != auth.ErasedDisplayName || state != "disabled" ||
		!strings.HasPrefix(gotEmail, "erased-") || !strings.HasSuffix(gotEmail, "@erased.invalid") || len(gotEmail) != len("erased-")+16+len("@erased.invalid") {
		t.Errorf("erased user: %q %q %q", gotEmail, name, state)
	}
	for _, q := range []string{
		`SELECT count(*) FROM users u WHERE u.tenant_id = $1 AND (u::text ILIKE '%' || $2 || '%' OR u::text ILIKE '%Ann Subject%')`,
		`SELECT count(*) FROM invitations i WHERE i.tenant_id = $1 AND (i::text ILIKE '%' || $2 || '%' OR i::text ILIKE '%pending@era%')`,
		`SELECT count(*) FROM login_failures WHERE key ILIKE '%' || $2 || '%' AND $1::uuid IS NOT NULL`,
		`SELECT count(*) FROM login_known_addresses WHERE account ILIKE '%' || $2 || '%' AND $1::uuid IS NOT NULL`,
	} {
		var n int
		if err := e.store.Pool().QueryRow(ctx, q, s.f.tenant.ID, subjectEmail).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s: %d rows (%v), want 0", q, n, err)
		}
	}
	var pending int
	if err := e.store.Pool().QueryRow(ctx, `SELECT count(*) FROM invitations WHERE tenant_id = $1 AND state = 'pending'`, s.f.tenant.ID).Scan(&pending); err != nil || pending != 0 {
		t.Errorf("%d pending invitations after the erasure (%v)", pending, err)
	}

	// Every credential is dead at once: access token, refresh token, API key, password.
	if _, err := e.client.WhoAmI(as(s.token), &authv1.WhoAmIRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("the erased user's access token: %v, want Unauthenticated", err)
	}
	if _, err := e.client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: s.refresh}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("the erased user's refresh token: %v, want Unauthenticated", err)
	}
	if _, err := e.client.WhoAmI(as(s.keySecret), &authv1.WhoAmIRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("the erased user's API key: %v, want Unauthenticated", err)
	}
	for _, addr := range []string{subjectEmail, auth.ErasedEmail(s.user.ID)} {
		if _, err := e.client.Login(ctx, &authv1.LoginRequest{Tenant: "era", Email: addr, Password: password}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("login as %s after the erasure: %v, want Unauthenticated", addr, err)
		}
	}
	// The mesh hears of it, as of any revocation.
	revs, err := e.clientAs(t, "ingest").ListRevocations(ctx, &authv1.ListRevocationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	heard := map[string]bool{}
	for _, r := range revs.GetRevocations() {
		heard[r.GetId()] = true
	}
	if !heard[s.user.ID] || !heard[s.keyID] {
		t.Errorf("ListRevocations does not name the erased user and its key: %v", revs.GetRevocations())
	}

	// The audit records keep the user's id, the chain verifies, and the erasure has one record.
	var kept int
	if err := e.store.Pool().QueryRow(ctx, `SELECT count(*) FROM audit_records WHERE chain = $1 AND actor = $2`, s.f.tenant.ID, s.user.ID).Scan(&kept); err != nil || kept < s.auditRecords {
		t.Errorf("%d audit records name the erased user (%v), want at least %d", kept, err, s.auditRecords)
	}
	chain, err := e.client.VerifyAuditChain(admin, &authv1.VerifyAuditChainRequest{})
	if err != nil || !chain.GetOk() {
		t.Fatalf("chain after the erasure: %v, %v", chain, err)
	}
	erasureRecords := func() []auth.AuditEntry {
		es, _, err := e.svc.ListAuditRecords(ctx, &authn.Principal{TenantID: s.f.tenant.ID}, auth.AuditFilter{Method: dsrv1.ParticipantService_StartErasure_FullMethodName}, 100, "")
		if err != nil {
			t.Fatal(err)
		}
		return es
	}
	if rs := erasureRecords(); len(rs) != 1 || rs[0].Actor != "service:dsr" || rs[0].ActorKind != "service" || rs[0].Resource != "dsr_era" ||
		rs[0].OutcomeName != "OK" || rs[0].Service != "auth" {
		t.Errorf("erasure audit records: %+v, want one by service:dsr on dsr_era", rs)
	}

	// Repeats answer the same, and add no record.
	st, err = dsr.StartErasure(ctx, req)
	check("repeated StartErasure", st, err)
	st, err = dsr.GetErasure(ctx, &dsrv1.GetErasureRequest{TenantId: s.f.tenant.ID, DsrRequest: "dsr_era"})
	check("GetErasure", st, err)
	if rs := erasureRecords(); len(rs) != 1 {
		t.Errorf("%d erasure records after repeats, want 1", len(rs))
	}

	// Untouched: the other tenant's user with the same email, the operator, everyone else.
	if tok := e.login(t, "era-other", subjectEmail, password); tok == "" {
		t.Error("the other tenant's user with the same email cannot log in")
	}
	if u, err := e.svc.GetUser(ctx, adminOf(s.otherTenant.tenant.ID), s.otherUser.ID); err != nil || u.Email != s.otherUser.Email || u.DisplayName != "Ann Elsewhere" || u.State != auth.UserActive {
		t.Errorf("the other tenant's user after the erasure: %+v, %v", u, err)
	}
	e.login(t, "", op.GetEmail(), op.GetPassword())
	if _, err := e.client.WhoAmI(admin, &authv1.WhoAmIRequest{}); err != nil {
		t.Errorf("the tenant's admin after the erasure: %v", err)
	}
	// Nothing is left to export.
	if left := export(t, dsr, &dsrv1.ExportSubjectRequest{TenantId: s.f.tenant.ID, DsrRequest: "dsr_era", Identifiers: req.GetIdentifiers()}); len(left) != 0 {
		t.Errorf("export after the erasure: %v", left)
	}

	// The state is the database: a restarted auth answers GetErasure, verified again.
	e.stop()
	e.serve(t)
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err = dsr.GetErasure(waitCtx, &dsrv1.GetErasureRequest{TenantId: s.f.tenant.ID, DsrRequest: "dsr_era"}, grpc.WaitForReady(true))
	check("GetErasure after a restart", st, err)

	// A user made again with the email afterwards is something left: verification sees it.
	if _, err := e.svc.CreateUser(ctx, adminOf(s.f.tenant.ID), auth.User{Email: subjectEmail, Role: rbac.Viewer}, password); err != nil {
		t.Fatal(err)
	}
	st, err = dsr.GetErasure(ctx, &dsrv1.GetErasureRequest{TenantId: s.f.tenant.ID, DsrRequest: "dsr_era"})
	if err != nil || st.GetDone() || st.GetRemaining() != 1 {
		t.Errorf("GetErasure with the email back: %v, %v; want 1 remaining", st, err)
	}
}

// An export reads page by page: a subject with more audit records, sessions and API keys than
// a page holds gets every one exactly once.
func TestParticipantExportPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := newSubject(t, e, "pages")
	ctx := context.Background()
	const extra = 1234
	recs := make([]auth.AuditEntry, extra)
	for i := range recs {
		recs[i] = auth.NewAuditEntry(audit.Record{ID: audit.NewID(), Time: time.Now(), Method: "/campaignmesh.auth.v1.AuthService/WhoAmI",
			TenantID: s.f.tenant.ID, Actor: s.user.ID, ActorKind: "user", Outcome: codes.OK, Service: "auth"})
	}
	if _, _, err := e.store.AppendAudit(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Pool().Exec(ctx, `INSERT INTO refresh_tokens (token_hash, family_id, user_id, expire_time, family_start_time)
		SELECT sha256(i::text::bytea), gen_random_uuid(), $1, now() + interval '1 day', now() FROM generate_series(1, $2) i`, s.user.ID, extra); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Pool().Exec(ctx, `INSERT INTO api_keys (id, tenant_id, name, scopes, secret_hash, creator, create_time)
		SELECT gen_random_uuid(), $1, 'k' || i, '{campaigns.read}', '\x00', $2, now() - i * interval '1 second' FROM generate_series(1, $3) i`,
		s.f.tenant.ID, s.user.ID, extra); err != nil {
		t.Fatal(err)
	}
	got := export(t, e.participantAs(t, "dsr"), &dsrv1.ExportSubjectRequest{TenantId: s.f.tenant.ID, DsrRequest: "dsr_pages", Identifiers: []*dsrv1.Identifier{email(subjectEmail)}})
	for typ, want := range map[string]int{"audit_record": s.auditRecords + extra, "session": 2 + extra, "api_key": 1 + extra} {
		seen := map[string]bool{}
		key := map[string]string{"audit_record": "id", "session": "family_id", "api_key": "id"}[typ]
		for _, r := range got[typ] {
			seen[r.GetData().GetFields()[key].GetStringValue()] = true
		}
		if len(got[typ]) != want || len(seen) != want {
			t.Errorf("%s: %d records, %d distinct, want %d", typ, len(got[typ]), len(seen), want)
		}
	}
}

// Concurrent calls of one erasure (dsr retrying while the first is in flight) erase once,
// count once and leave one audit record.
func TestParticipantConcurrentStartErasure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := newSubject(t, e, "race")
	dsr := e.participantAs(t, "dsr")
	req := &dsrv1.StartErasureRequest{TenantId: s.f.tenant.ID, DsrRequest: "dsr_race", Identifiers: []*dsrv1.Identifier{email(subjectEmail)}}
	want := map[string]int64{"users": 1, "sessions": 2, "api_keys": 1, "invitations": 0}
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			st, err := dsr.StartErasure(context.Background(), req)
			if err != nil || !st.GetDone() || !maps.Equal(st.GetCounts(), want) {
				t.Errorf("concurrent StartErasure = %v, %v; want done with %v", st, err, want)
			}
		})
	}
	wg.Wait()
	es, _, err := e.svc.ListAuditRecords(context.Background(), &authn.Principal{TenantID: s.f.tenant.ID},
		auth.AuditFilter{Method: dsrv1.ParticipantService_StartErasure_FullMethodName}, 100, "")
	if err != nil || len(es) != 1 {
		t.Errorf("%d erasure records (%v), want 1", len(es), err)
	}
}
