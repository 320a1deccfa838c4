package grpcapi_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

func TestCreatesAreIdempotentByRequestID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "idem")
	other := e.tenantWithRoles(t, "idem-other")
	admin := as(f.tokens[rbac.Admin])
	req := &authv1.CreateUserRequest{User: &authv1.User{Email: "once@idem.example", Role: authv1.Role_ROLE_VIEWER}, Password: password, RequestId: "req-1"}
	first, err := e.client.CreateUser(admin, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.client.CreateUser(admin, req)
	if err != nil || again.GetId() != first.GetId() {
		t.Fatalf("retry = %v, %v; want the first result %s", again, err, first.GetId())
	}
	list, err := e.client.ListUsers(admin, &authv1.ListUsersRequest{})
	if want := len(tenantRoles()) + 1; err != nil || len(list.GetUsers()) != want { // the fixture's one per role and this one
		t.Fatalf("users after a retried create: %d (%v), want %d", len(list.GetUsers()), err, want)
	}
	changed := &authv1.CreateUserRequest{User: &authv1.User{Email: "other@idem.example", Role: authv1.Role_ROLE_VIEWER}, Password: password, RequestId: "req-1"}
	if _, err := e.client.CreateUser(admin, changed); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("same request id, different request: %v, want InvalidArgument", err)
	}
	// Request ids are per tenant: another tenant may use the same one.
	if _, err := e.client.CreateUser(as(other.tokens[rbac.Admin]), &authv1.CreateUserRequest{User: &authv1.User{Email: "once@idem.example", Role: authv1.Role_ROLE_VIEWER}, Password: password, RequestId: "req-1"}); err != nil {
		t.Fatalf("same request id in another tenant: %v", err)
	}
	// A failed create does not burn the id.
	bad := &authv1.CreateUserRequest{User: &authv1.User{Email: "once@idem.example", Role: authv1.Role_ROLE_VIEWER}, Password: password, RequestId: "req-2"}
	if _, err := e.client.CreateUser(admin, bad); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("duplicate email: %v", err)
	}
	if _, err := e.client.CreateUser(admin, bad); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("retry of a failed create: %v, want it to run again", err)
	}
	if _, err := e.client.CreateUser(admin, &authv1.CreateUserRequest{User: &authv1.User{Email: "x@idem.example", Role: authv1.Role_ROLE_VIEWER}, Password: password, RequestId: "bad id!"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("malformed request id: %v", err)
	}

	// API keys: a retry returns the same key, but never the secret again.
	kreq := &authv1.CreateApiKeyRequest{Name: "ingest", Scopes: []string{"events.write"}, RequestId: "key-1"}
	k1, err := e.client.CreateApiKey(admin, kreq)
	if err != nil || k1.GetSecret() == "" {
		t.Fatalf("create key: %v %v", k1, err)
	}
	k2, err := e.client.CreateApiKey(admin, kreq)
	if err != nil || k2.GetApiKey().GetId() != k1.GetApiKey().GetId() || k2.GetSecret() != "" {
		t.Fatalf("retried key create = %v, %v; want the same key without its secret", k2, err)
	}
	var stored int
	if err := e.store.Pool().QueryRow(t.Context(), `SELECT count(*) FROM idempotency_keys WHERE position($1::bytea in response) > 0`, []byte(k1.GetSecret())).Scan(&stored); err != nil || stored != 0 {
		t.Fatalf("the key secret is kept in the idempotency table (%d rows, %v)", stored, err)
	}
}
