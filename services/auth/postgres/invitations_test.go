package postgres_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/auth"
	"github.com/campaignmesh/campaignmesh/services/auth/postgres"
)

const invitePassword = "a long enough password"

// inviteEnv is the auth domain on a real database with one tenant and its admin's principal.
type inviteEnv struct {
	s      *postgres.Store
	svc    *auth.Service
	tenant auth.Tenant
	admin  *authn.Principal
}

func newInviteEnv(t *testing.T) inviteEnv {
	t.Helper()
	s := openStore(t)
	svc := auth.NewService(s, time.Minute).WithKeyEncryption(newKEK(t, "test"))
	tn, err := svc.CreateTenant(context.Background(), "inv", "Inv")
	if err != nil {
		t.Fatal(err)
	}
	admin := &authn.Principal{TenantID: tn.ID, Subject: "00000000-0000-4000-8000-00000000000a", Role: rbac.Admin,
		Permissions: rbac.Admin.Permissions(), Kind: authn.KindAccessToken}
	return inviteEnv{s: s, svc: svc, tenant: tn, admin: admin}
}

func (e inviteEnv) invite(t *testing.T, email string, role rbac.Role) (auth.Invitation, string) {
	t.Helper()
	inv, token, err := e.svc.CreateInvitation(context.Background(), e.admin, email, role, nil)
	if err != nil {
		t.Fatal(err)
	}
	return inv, token
}

func violationFields(err error) []string {
	var de *apperr.Error
	if !errors.As(err, &de) {
		return nil
	}
	var fs []string
	for _, v := range de.Violations {
		fs = append(fs, v.Field)
	}
	return fs
}

func TestInvitationAcceptCreatesTheUserOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newInviteEnv(t)
	inv, token := e.invite(t, "new@inv.example", rbac.Manager)
	if inv.State != auth.InvitationPending || inv.TenantID != e.tenant.ID || inv.Creator != e.admin.Subject || inv.Role != rbac.Manager {
		t.Fatalf("created %+v", inv)
	}
	if d := inv.ExpireTime.Sub(inv.CreateTime); d < auth.DefaultInvitationTTL-time.Minute || d > auth.DefaultInvitationTTL+time.Minute {
		t.Fatalf("default lifetime %v, want 7 days", d)
	}
	if want := "cmi_" + strings.ReplaceAll(inv.ID, "-", "") + "_"; !strings.HasPrefix(token, want) || len(token) != len(want)+43 {
		t.Fatalf("token %.40s… is not cmi_<id hex>_<32 bytes base64url>", token)
	}
	// The token is stored only as its SHA-256: no column holds it or its secret part.
	var hash []byte
	var row string
	if err := e.s.Pool().QueryRow(ctx, `SELECT token_hash, i::text FROM invitations i WHERE id = $1`, inv.ID).Scan(&hash, &row); err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256([]byte(token)); string(hash) != string(sum[:]) {
		t.Fatal("stored hash is not the SHA-256 of the token")
	}
	if secret := token[strings.LastIndex(token, "_")+1:]; strings.Contains(row, secret) {
		t.Fatal("the token's secret is stored in clear")
	}

	got, err := e.svc.AcceptInvitation(ctx, token, "New Person", invitePassword)
	if err != nil {
		t.Fatal(err)
	}
	u := got.User
	if u.TenantID != e.tenant.ID || u.Email != "new@inv.example" || u.Role != rbac.Manager || u.State != auth.UserActive ||
		u.DisplayName != "New Person" || got.TenantSlug != "inv" {
		t.Fatalf("accepted as %+v in %q", u, got.TenantSlug)
	}
	// The password works.
	if _, err := e.svc.Login(ctx, "inv", "new@inv.example", invitePassword, ""); err != nil {
		t.Fatalf("login with the chosen password: %v", err)
	}
	list, _, err := e.svc.ListInvitations(ctx, e.admin, auth.Page{Size: 10})
	if err != nil || len(list) != 1 || list[0].State != auth.InvitationAccepted || list[0].AcceptTime == nil || list[0].UserID != u.ID {
		t.Fatalf("after accept: %+v %v", list, err)
	}
	// Single use: a second accept is FAILED_PRECONDITION and creates nothing.
	if _, err := e.svc.AcceptInvitation(ctx, token, "Again", "another long password"); !errors.Is(err, auth.ErrInvitationUsed) {
		t.Fatalf("second accept: %v, want ErrInvitationUsed", err)
	}
	if _, err := e.svc.RevokeInvitation(ctx, e.admin, inv.ID); code(err) != apperr.FailedPrecondition {
		t.Fatalf("revoke an accepted invitation: %v, want FailedPrecondition", err)
	}
	us, err := e.s.ListUsers(ctx, e.tenant.ID, auth.Page{Size: 10})
	if err != nil || len(us) != 1 {
		t.Fatalf("users after two accepts: %d %v", len(us), err)
	}
}

func TestInvitationConcurrentAcceptsCreateOneUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newInviteEnv(t)
	_, token := e.invite(t, "race@inv.example", rbac.Viewer)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { _, errs[i] = e.svc.AcceptInvitation(ctx, token, "", invitePassword) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, auth.ErrInvitationUsed):
			t.Errorf("losing accept: %v, want ErrInvitationUsed", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d accepts succeeded, want 1", ok)
	}
}

func TestInvitationTokensThatDoNotWork(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newInviteEnv(t)
	revoked, revokedToken := e.invite(t, "revoked@inv.example", rbac.Viewer)
	first, err := e.svc.RevokeInvitation(ctx, e.admin, revoked.ID)
	if err != nil || first.State != auth.InvitationRevoked || first.RevokeTime == nil {
		t.Fatalf("revoke: %+v %v", first, err)
	}
	again, err := e.svc.RevokeInvitation(ctx, e.admin, revoked.ID)
	if err != nil || !again.RevokeTime.Equal(*first.RevokeTime) {
		t.Fatalf("second revoke: %+v %v; want the first revoke time kept", again, err)
	}
	expired, expiredToken := e.invite(t, "expired@inv.example", rbac.Viewer)
	if _, err := e.s.Pool().Exec(ctx, `UPDATE invitations SET expire_time = now() - interval '1 second' WHERE id = $1`, expired.ID); err != nil {
		t.Fatal(err)
	}
	real, realToken := e.invite(t, "real@inv.example", rbac.Viewer)
	idHex := strings.ReplaceAll(real.ID, "-", "")

	// Unknown, malformed, forged and revoked tokens all answer the same.
	for name, token := range map[string]string{
		"revoked":          revokedToken,
		"empty":            "",
		"malformed":        "cmi_nothex_x",
		"api key":          "cmk_" + idHex + "_" + realToken[len(realToken)-43:],
		"unknown id":       "cmi_" + strings.Repeat("ab", 16) + "_" + realToken[len(realToken)-43:],
		"wrong secret":     "cmi_" + idHex + "_" + strings.Repeat("A", 43),
		"upper-case id":    "cmi_" + strings.ToUpper(idHex) + realToken[len("cmi_")+32:],
		"too long":         realToken + strings.Repeat("x", 200),
		"trailing garbage": realToken + "x",
	} {
		_, err := e.svc.AcceptInvitation(ctx, token, "", invitePassword)
		if !errors.Is(err, auth.ErrInvitationInvalid) {
			t.Errorf("%s token: %v, want ErrInvitationInvalid", name, err)
		}
	}
	if _, err := e.svc.AcceptInvitation(ctx, expiredToken, "", invitePassword); !errors.Is(err, auth.ErrInvitationExpired) {
		t.Errorf("expired token: %v, want ErrInvitationExpired", err)
	}
	// Password rules are CreateUser's, checked before the token.
	if _, err := e.svc.AcceptInvitation(ctx, realToken, "", "short"); code(err) != apperr.Invalid || violationFields(err)[0] != "password" {
		t.Errorf("short password: %v", err)
	}
	list, _, err := e.svc.ListInvitations(ctx, e.admin, auth.Page{Size: 10})
	if err != nil || len(list) != 3 {
		t.Fatalf("list: %+v %v", list, err)
	}
	want := map[string]auth.InvitationState{revoked.ID: auth.InvitationRevoked, expired.ID: auth.InvitationExpired, real.ID: auth.InvitationPending}
	for _, inv := range list {
		if inv.State != want[inv.ID] {
			t.Errorf("invitation %s reads %s, want %s", inv.Email, inv.State, want[inv.ID])
		}
	}
	// Nothing was created by the failures; the real token still works.
	if _, err := e.svc.AcceptInvitation(ctx, realToken, "", invitePassword); err != nil {
		t.Fatalf("the real token after the failures: %v", err)
	}
}

func TestInvitationEmailTakenAtAcceptLeavesItPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newInviteEnv(t)
	inv, token := e.invite(t, "taken@inv.example", rbac.Viewer)
	if _, err := e.svc.CreateUser(ctx, e.admin, auth.User{Email: "Taken@inv.example", Role: rbac.Viewer}, invitePassword); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.AcceptInvitation(ctx, token, "", invitePassword); code(err) != apperr.AlreadyExists {
		t.Fatalf("accept for an existing email: %v, want AlreadyExists", err)
	}
	list, _, err := e.svc.ListInvitations(ctx, e.admin, auth.Page{Size: 10})
	if err != nil || len(list) != 1 || list[0].ID != inv.ID || list[0].State != auth.InvitationPending || list[0].UserID != "" {
		t.Fatalf("after a failed accept the invitation must be untouched: %+v %v", list, err)
	}
	// Inviting an existing user is refused at once.
	if _, _, err := e.svc.CreateInvitation(ctx, e.admin, "taken@inv.example", rbac.Viewer, nil); code(err) != apperr.AlreadyExists {
		t.Fatalf("invite an existing user: %v, want AlreadyExists", err)
	}
}

func TestCreateInvitationRules(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newInviteEnv(t)
	suspended, err := e.svc.CreateTenant(ctx, "sus", "Sus")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SuspendTenant(ctx, suspended.ID); err != nil {
		t.Fatal(err)
	}
	operator := &authn.Principal{Subject: "00000000-0000-4000-8000-0000000000ff", Role: rbac.PlatformOperator,
		Permissions: rbac.PlatformOperator.Permissions(), Kind: authn.KindAccessToken}
	usersManageKey := &authn.Principal{TenantID: e.tenant.ID, Subject: "00000000-0000-4000-8000-0000000000cc",
		Permissions: []string{rbac.UsersManage}, Kind: authn.KindAPIKey}
	manager := &authn.Principal{TenantID: e.tenant.ID, Subject: "00000000-0000-4000-8000-0000000000bb",
		Permissions: rbac.Manager.Permissions(), Kind: authn.KindAccessToken}
	in := func(d time.Duration) *time.Time { t := time.Now().Add(d); return &t }
	tests := []struct {
		name       string
		create     func() error
		wantCode   apperr.Code
		wantFields []string
	}{
		{"admin invites a manager", func() error {
			_, _, err := e.svc.CreateInvitation(ctx, e.admin, "m@inv.example", rbac.Manager, in(72*time.Hour))
			return err
		}, 0, nil},
		{"admin invites an admin", func() error {
			_, _, err := e.svc.CreateInvitation(ctx, e.admin, "a@inv.example", rbac.Admin, nil)
			return err
		}, 0, nil},
		{"users.manage-only key invites an admin", func() error {
			_, _, err := e.svc.CreateInvitation(ctx, usersManageKey, "esc@inv.example", rbac.Admin, nil)
			return err
		}, apperr.PermissionDenied, nil},
		{"users.manage-only key invites a viewer", func() error {
			_, _, err := e.svc.CreateInvitation(ctx, usersManageKey, "esc@inv.example", rbac.Viewer, nil)
			return err
		}, apperr.PermissionDenied, nil}, // campaigns.read is not the key's
		{"a manager's role cannot be granted beyond it", func() error {
			_, _, err := e.svc.CreateInvitation(ctx, manager, "mm@inv.example", rbac.Admin, nil)
			return err
		}, apperr.PermissionDenied, nil},
		{"bad fields", func() error {
			_, _, err := e.svc.CreateInvitation(ctx, e.admin, "not an email", rbac.PlatformOperator, in(31*24*time.Hour))
			return err
		}, apperr.Invalid, []string{"invitation.email", "invitation.role", "invitation.expire_time"}},
		{"expiry in the past", func() error {
			_, _, err := e.svc.CreateInvitation(ctx, e.admin, "p@inv.example", rbac.Viewer, in(-time.Minute))
			return err
		}, apperr.Invalid, []string{"invitation.expire_time"}},
		{"operator uses CreateInvitation", func() error {
			_, _, err := e.svc.CreateInvitation(ctx, operator, "o@inv.example", rbac.Viewer, nil)
			return err
		}, apperr.Invalid, []string{"tenant"}},
		{"operator invites a new tenant's admin", func() error {
			_, _, err := e.svc.CreateTenantInvitation(ctx, operator, e.tenant.ID, "first@inv.example", rbac.Admin, in(30*24*time.Hour-time.Minute))
			return err
		}, 0, nil},
		{"operator invites into a suspended tenant", func() error {
			_, _, err := e.svc.CreateTenantInvitation(ctx, operator, suspended.ID, "x@sus.example", rbac.Admin, nil)
			return err
		}, apperr.FailedPrecondition, nil},
		{"operator invites into an unknown tenant", func() error {
			_, _, err := e.svc.CreateTenantInvitation(ctx, operator, "00000000-0000-4000-8000-000000000999", "x@sus.example", rbac.Admin, nil)
			return err
		}, apperr.NotFound, nil},
		{"operator cannot make an operator", func() error {
			_, _, err := e.svc.CreateTenantInvitation(ctx, operator, "bad", "x@sus.example", rbac.PlatformOperator, nil)
			return err
		}, apperr.Invalid, []string{"tenant_id", "invitation.role"}},
	}
	for _, tt := range tests {
		err := tt.create()
		if code(err) != tt.wantCode {
			t.Errorf("%s: %v, want code %d", tt.name, err, tt.wantCode)
			continue
		}
		if got := strings.Join(violationFields(err), ","); got != strings.Join(tt.wantFields, ",") {
			t.Errorf("%s: violations %s, want %v", tt.name, got, tt.wantFields)
		}
	}
}

func TestInvitationsAreScopedToTheirTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newInviteEnv(t)
	other, err := e.svc.CreateTenant(ctx, "other", "Other")
	if err != nil {
		t.Fatal(err)
	}
	otherAdmin := &authn.Principal{TenantID: other.ID, Subject: "00000000-0000-4000-8000-0000000000dd", Permissions: rbac.Admin.Permissions()}
	inv, _ := e.invite(t, "mine@inv.example", rbac.Viewer)
	if _, err := e.svc.RevokeInvitation(ctx, otherAdmin, inv.ID); code(err) != apperr.NotFound {
		t.Fatalf("revoke another tenant's invitation: %v, want NotFound", err)
	}
	list, _, err := e.svc.ListInvitations(ctx, otherAdmin, auth.Page{Size: 10})
	if err != nil || len(list) != 0 {
		t.Fatalf("the other tenant lists %+v %v", list, err)
	}
	mine, _, err := e.svc.ListInvitations(ctx, e.admin, auth.Page{Size: 10})
	if err != nil || len(mine) != 1 || mine[0].State != auth.InvitationPending {
		t.Fatalf("own list after a foreign revoke: %+v %v", mine, err)
	}
}

func TestListInvitationsPages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newInviteEnv(t)
	var want []string
	for _, email := range []string{"a@inv.example", "b@inv.example", "c@inv.example", "d@inv.example", "e@inv.example"} {
		inv, _ := e.invite(t, email, rbac.Viewer)
		want = append(want, inv.ID)
	}
	var got []string
	token := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		page, err := auth.ParsePage(2, token)
		if err != nil {
			t.Fatal(err)
		}
		is, next, err := e.svc.ListInvitations(ctx, e.admin, page)
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range is {
			got = append(got, i.ID)
		}
		if next == "" {
			break
		}
		token = next
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("paged %v, want %v", got, want)
	}
}
