package grpcapi_test

import (
	"context"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn/authclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "keys")
	admin := as(f.tokens[rbac.Admin])
	ctx := context.Background()

	created, err := e.client.CreateApiKey(admin, &authv1.CreateApiKeyRequest{Name: "reader", Scopes: []string{"users.read"}})
	if err != nil {
		t.Fatal(err)
	}
	secret, key := created.GetSecret(), created.GetApiKey()
	if !strings.HasPrefix(secret, "cmk_") || !strings.HasPrefix(secret, key.GetSecretPrefix()) || key.GetTenantId() != f.tenant.ID || key.GetCreator() != f.users[rbac.Admin].ID {
		t.Fatalf("created %v with secret prefix %.12s", key, secret)
	}
	// The secret is never shown again and not stored in clear.
	got, err := e.client.GetApiKey(admin, &authv1.GetApiKeyRequest{Id: key.GetId()})
	if err != nil || strings.Contains(got.String(), secret[len(key.GetSecretPrefix()):]) {
		t.Fatalf("GetApiKey = %v, %v", got, err)
	}
	var stored []byte
	if err := e.store.Pool().QueryRow(ctx, `SELECT secret_hash FROM api_keys WHERE id = $1`, key.GetId()).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256([]byte(secret)); string(stored) != string(sum[:]) {
		t.Fatal("stored secret is not the SHA-256 of the secret")
	}

	// A key can do exactly what its scopes name.
	keyCtx := as(secret)
	who, err := e.client.WhoAmI(keyCtx, &authv1.WhoAmIRequest{})
	if err != nil || who.GetCredentialKind() != "api_key" || strings.Join(who.GetPermissions(), ",") != "users.read" || who.GetTenantId() != f.tenant.ID {
		t.Fatalf("WhoAmI with key = %v, %v", who, err)
	}
	if _, err := e.client.ListUsers(keyCtx, &authv1.ListUsersRequest{}); err != nil {
		t.Fatalf("in-scope call: %v", err)
	}
	if _, err := e.client.CreateUser(keyCtx, &authv1.CreateUserRequest{User: &authv1.User{Email: "k@keys.example", Role: authv1.Role_ROLE_VIEWER}, Password: password}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("out-of-scope call: %v, want PermissionDenied", err)
	}
	if _, err := e.client.ListApiKeys(keyCtx, &authv1.ListApiKeysRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("out-of-scope call: %v, want PermissionDenied", err)
	}
	listed, err := e.client.GetApiKey(admin, &authv1.GetApiKeyRequest{Id: key.GetId()})
	if err != nil || listed.GetLastUsedTime() == nil {
		t.Fatalf("last used time not recorded: %v %v", listed, err)
	}

	// Scopes must be a subset of the creator's own permissions, and real permissions.
	m := as(f.tokens[rbac.Manager])
	for name, scopes := range map[string][]string{"beyond the creator": {"users.manage"}, "unknown": {"root"}, "none": nil} {
		_, err := e.client.CreateApiKey(as(f.tokens[rbac.Admin]), &authv1.CreateApiKeyRequest{Name: "x", Scopes: scopes})
		if name == "beyond the creator" {
			_, err = e.client.CreateApiKey(m, &authv1.CreateApiKeyRequest{Name: "x", Scopes: scopes})
		}
		if code := status.Code(err); code != codes.InvalidArgument && code != codes.PermissionDenied {
			t.Errorf("scopes %s: %v, want refusal", name, err)
		}
	}
	_, err = e.client.CreateApiKey(as(f.tokens[rbac.Admin]), &authv1.CreateApiKeyRequest{Name: "x", Scopes: []string{"tenants.manage"}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("admin granting an operator permission: %v, want InvalidArgument", err)
	}

	// Revocation: auth refuses at once; another service within its cache bound.
	remote := authn.NewRemoteAPIKeys(authclient.New(e.clientAs(t, "ingest")), 300*time.Millisecond)
	if _, err := remote.VerifyAPIKey(ctx, secret); err != nil {
		t.Fatalf("remote verification: %v", err)
	}
	if _, err := e.client.RevokeApiKey(admin, &authv1.RevokeApiKeyRequest{Id: key.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.WhoAmI(keyCtx, &authv1.WhoAmIRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("revoked key at auth: %v, want Unauthenticated", err)
	}
	meshtest.Eventually(t, 2*time.Second, func() bool {
		_, err := remote.VerifyAPIKey(ctx, secret)
		return err != nil
	}, "a remote service still accepts the revoked key (cache bound 300 ms)")

	// Only mesh services on the allow-list may call VerifyApiKey.
	if _, err := e.client.VerifyApiKey(ctx, &authv1.VerifyApiKeyRequest{Secret: secret}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("VerifyApiKey from the gateway identity: %v, want PermissionDenied", err)
	}
}

func TestExpiredAndMalformedAPIKeysAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "expiry")
	ctx := context.Background()
	// Store a key that expired a minute ago, with a secret we know.
	id := "0f0e0d0c-0b0a-4908-8706-050403020100"
	secret := "cmk_" + strings.ReplaceAll(id, "-", "") + "_known-secret"
	sum := sha256.Sum256([]byte(secret))
	past := time.Now().Add(-time.Minute)
	if _, err := e.store.CreateAPIKey(ctx, auth.APIKey{ID: id, TenantID: f.tenant.ID, Name: "old", Scopes: []string{"users.read"},
		Creator: f.users[rbac.Admin].ID, ExpireTime: &past}, sum[:], nil); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]string{
		"expired":        secret,
		"wrong secret":   "cmk_" + strings.ReplaceAll(id, "-", "") + "_guessed",
		"malformed":      "cmk_nothex_x",
		"unknown key id": "cmk_00000000000000000000000000000000_x",
	} {
		if _, err := e.client.WhoAmI(as(s), &authv1.WhoAmIRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s key: %v, want Unauthenticated", name, err)
		}
	}
	// An expiry in the past is refused at creation.
	_, err := e.client.CreateApiKey(as(f.tokens[rbac.Admin]), &authv1.CreateApiKeyRequest{Name: "x", Scopes: []string{"users.read"}, ExpireTime: timestamppb.New(past)})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("expiry in the past: %v", err)
	}
}
