package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/auth"
	"github.com/campaignmesh/campaignmesh/services/auth/postgres"
)

func openStore(t *testing.T) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// newKEK returns one random key-encryption key named id.
func newKEK(t *testing.T, id string) *auth.KeyEncryptionKeys {
	t.Helper()
	k, err := auth.ParseKeyEncryptionKeys(kekSpec(id))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// kekSpec is a key-encryption key named id with random key material, as configured.
func kekSpec(id string) string {
	raw := make([]byte, auth.KEKSize)
	_, _ = rand.Read(raw)
	return id + ":" + base64.StdEncoding.EncodeToString(raw)
}

func code(err error) apperr.Code {
	var de *apperr.Error
	if errors.As(err, &de) {
		return de.Code
	}
	return 0
}

func TestTenants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	a, err := s.CreateTenant(ctx, auth.Tenant{Slug: "alpha", DisplayName: "Alpha", State: auth.TenantActive}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == "" || a.State != auth.TenantActive || a.CreateTime.IsZero() {
		t.Fatalf("created %+v", a)
	}
	if _, err := s.CreateTenant(ctx, auth.Tenant{Slug: "alpha", DisplayName: "Again", State: auth.TenantActive}, nil); code(err) != apperr.AlreadyExists {
		t.Fatalf("duplicate slug: %v", err)
	}
	got, err := s.GetTenantBySlug(ctx, "alpha")
	if err != nil || got.ID != a.ID {
		t.Fatalf("by slug: %+v %v", got, err)
	}
	sus, err := s.SetTenantState(ctx, a.ID, auth.TenantSuspended, nil)
	if err != nil || sus.State != auth.TenantSuspended {
		t.Fatalf("suspend: %+v %v", sus, err)
	}
	if _, err := s.GetTenant(ctx, "00000000-0000-0000-0000-000000000001"); code(err) != apperr.NotFound {
		t.Fatalf("missing tenant: %v", err)
	}
}

func TestListTenantsPagesStablyInCreationOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	svc := auth.NewService(s, time.Minute).WithKeyEncryption(newKEK(t, "test"))
	var want []string
	for _, slug := range []string{"t-one", "t-two", "t-three", "t-four", "t-five"} {
		tn, err := svc.CreateTenant(ctx, slug, slug)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, tn.ID)
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
		ts, next, err := svc.ListTenants(ctx, page)
		if err != nil {
			t.Fatal(err)
		}
		for _, tn := range ts {
			got = append(got, tn.ID)
		}
		if next == "" {
			break
		}
		token = next
	}
	if len(got) != len(want) {
		t.Fatalf("listed %d tenants, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order: got %v want %v", got, want)
		}
	}
}

func TestUsersAreScopedToTheirTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	a, _ := s.CreateTenant(ctx, auth.Tenant{Slug: "aaa", DisplayName: "A", State: auth.TenantActive}, nil)
	b, _ := s.CreateTenant(ctx, auth.Tenant{Slug: "bbb", DisplayName: "B", State: auth.TenantActive}, nil)
	ua, err := s.CreateUser(ctx, auth.User{TenantID: a.ID, Email: "x@example.com", Role: rbac.Viewer, State: auth.UserActive}, "hash", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The same email may exist in another tenant, but not twice in one (case-insensitive).
	if _, err := s.CreateUser(ctx, auth.User{TenantID: b.ID, Email: "x@example.com", Role: rbac.Viewer, State: auth.UserActive}, "hash", nil); err != nil {
		t.Fatalf("same email in another tenant: %v", err)
	}
	if _, err := s.CreateUser(ctx, auth.User{TenantID: a.ID, Email: "X@Example.com", Role: rbac.Viewer, State: auth.UserActive}, "hash", nil); code(err) != apperr.AlreadyExists {
		t.Fatalf("duplicate email: %v", err)
	}
	for name, err := range map[string]error{
		"get":   second(s.GetUser(ctx, b.ID, ua.ID)),
		"state": second(s.SetUserState(ctx, b.ID, ua.ID, auth.UserDisabled, nil)),
		"role":  second(s.SetUserRole(ctx, b.ID, ua.ID, rbac.Admin, nil)),
	} {
		if code(err) != apperr.NotFound {
			t.Errorf("%s across tenants: %v, want NotFound", name, err)
		}
	}
	us, err := s.ListUsers(ctx, b.ID, auth.Page{Size: 10})
	if err != nil || len(us) != 1 || us[0].TenantID != b.ID {
		t.Fatalf("tenant b lists %+v, %v", us, err)
	}
	// Nothing changed in tenant a.
	got, err := s.GetUser(ctx, a.ID, ua.ID)
	if err != nil || got.State != auth.UserActive || got.Role != rbac.Viewer {
		t.Fatalf("user a after foreign updates: %+v %v", got, err)
	}
}

func second[T any](_ T, err error) error { return err }

func TestBootstrapHappensOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	svc := auth.NewService(s, time.Minute).WithKeyEncryption(newKEK(t, "test"))
	if err := svc.Keys().Load(ctx); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files, err := svc.Bootstrap(ctx, dir)
	if err != nil || len(files) != 2 {
		t.Fatalf("first bootstrap: %v %v", files, err)
	}
	again, err := svc.Bootstrap(ctx, t.TempDir())
	if err != nil || len(again) != 0 {
		t.Fatalf("second bootstrap wrote %v, %v; want nothing", again, err)
	}
}

func TestSigningKeyRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	kek := newKEK(t, "test")
	svc := auth.NewService(s, time.Minute).WithKeyEncryption(kek)
	if err := svc.Keys().Load(ctx); err != nil {
		t.Fatal(err)
	}
	before, err := svc.PublishedKeys(ctx)
	if err != nil || len(before) != 1 || !before[0].Active {
		t.Fatalf("initial keys: %+v %v", before, err)
	}
	rotated, err := svc.RotateSigningKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after, err := svc.PublishedKeys(ctx)
	if err != nil || len(after) != 2 {
		t.Fatalf("after rotation: %+v %v", after, err)
	}
	if after[0].KID != rotated.KID || !after[0].Active || after[1].KID != before[0].KID || after[1].Active {
		t.Fatalf("after rotation, newest first with only the new key active: %+v", after)
	}
	// A second replica (a new keyring on the same store) signs with the new key too.
	other := auth.NewService(s, time.Minute).WithKeyEncryption(kek)
	if err := other.Keys().Load(ctx); err != nil {
		t.Fatal(err)
	}
	kid, _, err := other.Keys().Signer(ctx)
	if err != nil || kid != rotated.KID {
		t.Fatalf("replica signs with %q, want %q", kid, rotated.KID)
	}
	// The old key still verifies tokens it signed before the rotation.
	if _, err := svc.Keys().PublicKey(ctx, before[0].KID); err != nil {
		t.Fatalf("old key no longer verifies: %v", err)
	}
}
