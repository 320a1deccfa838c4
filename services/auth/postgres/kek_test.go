package postgres_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/auth"
	"github.com/campaignmesh/campaignmesh/services/auth/postgres"
)

// kekService is an auth service on s whose signing keys are under the KEKs of spec.
func kekService(t *testing.T, s *postgres.Store, spec string) *auth.Service {
	t.Helper()
	keks, err := auth.ParseKeyEncryptionKeys(spec)
	if err != nil {
		t.Fatal(err)
	}
	return auth.NewService(s, time.Minute).WithKeyEncryption(keks)
}

type signingRow struct {
	kid    string
	sealed []byte
	kekID  *string
}

func signingRows(t *testing.T, s *postgres.Store) []signingRow {
	t.Helper()
	rows, err := s.Pool().Query(context.Background(), `SELECT kid, private_key, kek_id FROM signing_keys ORDER BY create_time`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []signingRow
	for rows.Next() {
		var r signingRow
		if err := rows.Scan(&r.kid, &r.sealed, &r.kekID); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestSigningKeysAreEncryptedAtRest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	svc := kekService(t, s, kekSpec("k1"))
	if err := svc.Keys().Load(ctx); err != nil {
		t.Fatal(err)
	}
	kid, priv, err := svc.Keys().Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rows := signingRows(t, s)
	if len(rows) != 1 || rows[0].kid != kid || rows[0].kekID == nil || *rows[0].kekID != "k1" {
		t.Fatalf("rows = %+v, want the one key under k1", rows)
	}
	if bytes.Contains(rows[0].sealed, priv.Seed()) || bytes.Contains(rows[0].sealed, priv) {
		t.Fatal("the stored row holds the seed in clear")
	}
}

func TestKEKRotationReencryptsAndOldTokensVerify(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	oldKEK, newKEK := kekSpec("old"), kekSpec("new")
	svc := kekService(t, s, oldKEK)
	if err := svc.Keys().Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RotateSigningKey(ctx); err != nil { // two keys: an active and a retired one
		t.Fatal(err)
	}
	tn, err := svc.CreateTenant(ctx, "kek", "KEK")
	if err != nil {
		t.Fatal(err)
	}
	admin := &authn.Principal{TenantID: tn.ID, Permissions: rbac.Admin.Permissions()}
	if _, err := svc.CreateUser(ctx, admin, auth.User{Email: "ann@kek.example", Role: rbac.Viewer}, "a long enough password"); err != nil {
		t.Fatal(err)
	}
	tok, err := svc.Login(ctx, "kek", "ann@kek.example", "a long enough password", "")
	if err != nil {
		t.Fatal(err)
	}

	// Prepend the new KEK and restart: every row moves under it.
	restarted := kekService(t, s, newKEK+","+oldKEK)
	if err := restarted.Keys().Load(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range signingRows(t, s) {
		if r.kekID == nil || *r.kekID != "new" {
			t.Fatalf("key %s is under %v after the restart, want new", r.kid, r.kekID)
		}
	}
	// Then drop the old KEK: the keys still load, and tokens from before verify.
	dropped := kekService(t, s, newKEK)
	if err := dropped.Keys().Load(ctx); err != nil {
		t.Fatalf("load with only the new KEK: %v", err)
	}
	if p, err := authn.NewJWTVerifier(dropped.Keys()).Verify(ctx, tok.AccessToken); err != nil || p.TenantID != tn.ID {
		t.Fatalf("token from before the KEK rotation: %+v %v", p, err)
	}
	if _, err := dropped.Login(ctx, "kek", "ann@kek.example", "a long enough password", ""); err != nil {
		t.Fatalf("signing after the KEK rotation: %v", err)
	}
}

// Keys stored before encryption existed are encrypted on the next start, and keep working.
func TestSigningKeysInClearAreEncryptedOnStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	seed := bytes.Repeat([]byte{7}, 32)
	if _, err := s.Pool().Exec(ctx, `INSERT INTO signing_keys (kid, private_key) VALUES ('legacy', $1)`, seed); err != nil {
		t.Fatal(err)
	}
	svc := kekService(t, s, kekSpec("k1"))
	if err := svc.Keys().Load(ctx); err != nil {
		t.Fatal(err)
	}
	rows := signingRows(t, s)
	if len(rows) != 1 || rows[0].kekID == nil || *rows[0].kekID != "k1" || bytes.Contains(rows[0].sealed, seed) {
		t.Fatalf("legacy row after start: %+v", rows)
	}
	if kid, _, err := svc.Keys().Signer(ctx); err != nil || kid != "legacy" {
		t.Fatalf("signer = %q, %v; want the legacy key", kid, err)
	}
}

func TestSigningKeysRefuseToLoadWithoutTheRightKEK(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	spec := kekSpec("k1")
	svc := kekService(t, s, spec)
	if err := svc.Keys().Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RotateSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	load := func(svc *auth.Service) error { return svc.Keys().Load(ctx) }
	cases := map[string]struct {
		svc  *auth.Service
		want string
	}{
		"no KEK":                 {auth.NewService(s, time.Minute), "no key-encryption key configured"},
		"same id, other key":     {kekService(t, s, kekSpec("k1")), `does not decrypt under key-encryption key "k1"`},
		"KEK dropped too soon":   {kekService(t, s, kekSpec("k2")), `key-encryption key "k1", which is not configured`},
		"new KEK, old one wrong": {kekService(t, s, kekSpec("k2")+","+kekSpec("k1")), "does not decrypt"},
	}
	for name, c := range cases {
		if err := load(c.svc); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, c.want)
		}
	}
	// Nothing was rewritten by the failed starts: the right KEK still loads.
	if err := load(kekService(t, s, spec)); err != nil {
		t.Fatalf("the right KEK after failed starts: %v", err)
	}
}

func TestTamperedSigningKeyRowsFailToLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, tamper := range map[string]string{
		"flipped byte": `UPDATE signing_keys SET private_key = overlay(private_key placing '\xff'::bytea from 20 for 1) WHERE retire_time IS NULL`,
		// The ciphertexts of two keys swapped: each is valid, but bound to the other kid.
		"swapped rows": `UPDATE signing_keys a SET private_key = b.private_key FROM signing_keys b WHERE a.kid <> b.kid`,
		"truncated":    `UPDATE signing_keys SET private_key = substring(private_key from 1 for 10) WHERE retire_time IS NULL`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := openStore(t)
			spec := kekSpec("k1")
			svc := kekService(t, s, spec)
			if err := svc.Keys().Load(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := svc.RotateSigningKey(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Pool().Exec(ctx, tamper); err != nil {
				t.Fatal(err)
			}
			err := kekService(t, s, spec).Keys().Load(ctx)
			if err == nil || !strings.Contains(err.Error(), "signing key") {
				t.Fatalf("load after tampering: %v, want a refusal naming the key", err)
			}
		})
	}
}
