package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

var testNow = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// testCLI is an app wired to buffers, a fixed clock, env and a fake gateway.
type testCLI struct {
	*app
	stdin          *strings.Reader
	stdout, stderr *bytes.Buffer
	dials          int
}

// newTestCLI returns a CLI whose environment is env and whose gateway is client. A nil
// client fails the test if the command dials. CMESH_CREDENTIALS defaults to a file in a
// fresh temporary directory.
func newTestCLI(t *testing.T, env map[string]string, client authv1.AuthServiceClient) *testCLI {
	t.Helper()
	if env == nil {
		env = map[string]string{}
	}
	if _, ok := env["CMESH_CREDENTIALS"]; !ok {
		env["CMESH_CREDENTIALS"] = filepath.Join(t.TempDir(), "credentials.json")
	}
	c := &testCLI{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	c.app = &app{
		stdin:  c.stdin,
		stdout: c.stdout,
		stderr: c.stderr,
		getenv: func(k string) string { return env[k] },
		now:    func() time.Time { return testNow },
		dial: func(*app) (authv1.AuthServiceClient, io.Closer, error) {
			c.dials++
			if client == nil {
				t.Error("command dialled the gateway")
				return nil, nil, errors.New("no gateway in this test")
			}
			return client, io.NopCloser(nil), nil
		},
	}
	return c
}

func TestDispatchErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{"no command", nil, "missing command"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown global flag", []string{"-bogus", "whoami"}, "flag provided but not defined: -bogus"},
		{"bad output format", []string{"-o", "yaml", "whoami"}, "-o yaml: want table or json"},
		{"zero timeout", []string{"-timeout", "0s", "whoami"}, "-timeout must be positive"},
		{"group without subcommand", []string{"tenants"}, "tenants: missing subcommand"},
		{"unknown subcommand", []string{"tenants", "frob"}, `unknown command "tenants frob"`},
		{"help for unknown command", []string{"help", "frob"}, `unknown command "frob"`},
		{"missing argument", []string{"tenants", "get"}, "tenants get: want ID, got 0 argument(s)"},
		{"extra argument", []string{"tenants", "get", "a", "b"}, "want ID, got 2 argument(s)"},
		{"unexpected argument", []string{"whoami", "me"}, `whoami: unexpected argument "me"`},
		{"global flag after command", []string{"tenants", "list", "-o", "json"}, "flag provided but not defined: -o"},
		{"negative page size", []string{"tenants", "list", "-page-size", "-1"}, "-page-size -1 is out of range"},
		{"tenant without name", []string{"tenants", "create", "-slug", "acme"}, "-slug and -name are required"},
		{"user without role", []string{"users", "create", "-email", "a@example.com"}, "-role is required"},
		{"user with unknown role", []string{"users", "create", "-email", "a@example.com", "-role", "owner"}, `unknown role "owner"`},
		{"set unknown role", []string{"users", "set-role", "u1", "owner"}, `unknown role "owner": want admin, manager, analyst, viewer or privacy_officer`},
		{"set platform operator role", []string{"users", "set-role", "u1", "platform_operator"}, `unknown role "platform_operator"`},
		{"login without email", []string{"login", "-password-stdin"}, "-email is required"},
		{"two password sources", []string{"login", "-email", "a@example.com", "-password-stdin", "-password-file", "pw"}, "are exclusive"},
		{"password stdin and file", []string{"password", "-stdin", "-new-file", "pw"}, "-stdin and -current-file/-new-file are exclusive"},
		{"api key without scope", []string{"apikeys", "create", "-name", "ingest"}, "-scope is required"},
		{"api key without name", []string{"apikeys", "create", "-scope", "events.write"}, "-name is required"},
		{"api key empty scope", []string{"apikeys", "create", "-name", "n", "-scope", "events.write,"}, "empty scope"},
		{"api key two expiries", []string{"apikeys", "create", "-name", "n", "-scope", "s", "-expires", "1h", "-expire-time", "2030-01-01T00:00:00Z"}, "-expires and -expire-time are exclusive"},
		{"api key expired", []string{"apikeys", "create", "-name", "n", "-scope", "s", "-expire-time", "2020-01-01T00:00:00Z"}, "is not in the future"},
		{"api key bad expiry", []string{"apikeys", "create", "-name", "n", "-scope", "s", "-expire-time", "tomorrow"}, "want an RFC 3339 time"},
		{"bad request id", []string{"tenants", "create", "-slug", "acme", "-name", "Acme", "-request-id", "no spaces"}, `-request-id "no spaces": want 1-64 of A-Za-z0-9._-`},
		{"long request id", []string{"users", "create", "-email", "a@example.com", "-role", "admin", "-request-id", strings.Repeat("x", 65)}, "want 1-64"},
		{"audit since and start", []string{"audit", "list", "-since", "1h", "-start", "2026-01-01T00:00:00Z"}, "-since and -start are exclusive"},
		{"audit end before start", []string{"audit", "list", "-start", "2026-01-02T00:00:00Z", "-end", "2026-01-01T00:00:00Z"}, "the end is not after the start"},
		{"audit unknown outcome", []string{"audit", "list", "-outcome", "DENIED"}, `-outcome "DENIED": want a gRPC code name`},
		{"revoke sessions without id", []string{"users", "revoke-sessions"}, "users revoke-sessions: want ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCLI(t, nil, nil)
			if code := c.run(context.Background(), tt.args); code != 2 {
				t.Errorf("exit code = %d, want 2; stderr:\n%s", code, c.stderr)
			}
			if !strings.Contains(c.stderr.String(), tt.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantStderr, c.stderr)
			}
			if !strings.Contains(c.stderr.String(), "usage: cmesh") {
				t.Errorf("stderr has no usage:\n%s", c.stderr)
			}
			if c.stdout.Len() != 0 {
				t.Errorf("stdout = %q, want nothing", c.stdout)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantStdout []string
	}{
		{"help", []string{"help"}, []string{"usage: cmesh [global flags] <command>", "tenants list", "users set-role ID ROLE", "-addr", "CMESH_TOKEN"}},
		{"-h", []string{"-h"}, []string{"signing-keys rotate", "-cacert"}},
		{"help group", []string{"help", "tenants"}, []string{"usage: cmesh [global flags] tenants <command>", "suspend ID"}},
		{"group -h", []string{"users", "-h"}, []string{"set-role ID ROLE"}},
		{"help command", []string{"help", "users", "create"}, []string{"usage: cmesh [global flags] users create [flags]", "-password-stdin", "-role role"}},
		{"command -h", []string{"login", "-h"}, []string{"-tenant slug", "-f file", ".state/bootstrap"}},
		{"logout says what stays valid", []string{"logout", "-h"}, []string{"stays valid on the server until it expires"}},
		{"help lists new commands", []string{"help"}, []string{"password", "roles", "apikeys create", "apikeys revoke ID", "audit verify", "users revoke-sessions ID", "users unlock ID", "signing-keys rotate"}},
		{"old keys group name", []string{"keys", "-h"}, []string{"usage: cmesh [global flags] signing-keys <command>", "Also called: keys."}},
		{"apikeys create flags", []string{"apikeys", "create", "-h"}, []string{"-scope permission", "-expire-time time", "-request-id id", "printed once"}},
		{"env token is not refreshed", []string{"help"}, []string{"it is never refreshed"}},
		{"help lists nested commands", []string{"help"}, []string{"dsr create", "dsr receipt verify FILE", "dsr suppressions get [VALUE]", "privacy policy set"}},
		{"nested group", []string{"dsr", "receipt", "-h"}, []string{"usage: cmesh [global flags] dsr receipt <command>", "verify FILE"}},
		{"nested command", []string{"help", "dsr", "receipt", "verify"}, []string{"-keys file", "The server is never"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCLI(t, nil, nil)
			if code := c.run(context.Background(), tt.args); code != 0 {
				t.Errorf("exit code = %d, want 0; stderr:\n%s", code, c.stderr)
			}
			for _, want := range tt.wantStdout {
				if !strings.Contains(c.stdout.String(), want) {
					t.Errorf("stdout does not contain %q:\n%s", want, c.stdout)
				}
			}
		})
	}
}

// TestEveryCommandHasHelp runs "-h" on every leaf command: each must print its usage
// without dialling.
func TestEveryCommandHasHelp(t *testing.T) {
	t.Parallel()
	var paths [][]string
	var walk func(path []string, cmds []*command)
	walk = func(path []string, cmds []*command) {
		for _, cmd := range cmds {
			p := append(slices.Clone(path), cmd.name)
			paths = append(paths, p) // groups print their usage too
			walk(p, cmd.subs)
		}
	}
	walk(nil, commands)
	for _, path := range paths {
		name := strings.Join(path, " ")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := newTestCLI(t, nil, nil)
			if code := c.run(context.Background(), append(path, "-h")); code != 0 {
				t.Errorf("exit code = %d, want 0; stderr:\n%s", code, c.stderr)
			}
			if want := "usage: cmesh [global flags] " + name; !strings.Contains(c.stdout.String(), want) {
				t.Errorf("stdout does not contain %q:\n%s", want, c.stdout)
			}
		})
	}
}

func TestTokenChecksBeforeCalling(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		creds      *storedCredentials
		addr       string
		wantStderr string
	}{
		{"not logged in", nil, "", "cmesh: not logged in; run cmesh login"},
		{"expired", &storedCredentials{Addr: defaultAddr, AccessToken: "tok", ExpireTime: testNow.Add(-time.Minute)}, "", "cmesh: session expired; run cmesh login"},
		{"expires now", &storedCredentials{Addr: defaultAddr, AccessToken: "tok", ExpireTime: testNow}, "", "session expired"},
		{"other gateway", &storedCredentials{Addr: "gw.example.com:443", AccessToken: "tok", ExpireTime: testNow.Add(time.Hour)}, "", "the stored token is for gw.example.com:443, not localhost:8443"},
		{"other gateway by flag", &storedCredentials{Addr: defaultAddr, AccessToken: "tok", ExpireTime: testNow.Add(time.Hour)}, "evil.example.com:443", "not evil.example.com:443"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "credentials.json")
			if tt.creds != nil {
				if err := saveCredentials(path, *tt.creds); err != nil {
					t.Fatal(err)
				}
			}
			c := newTestCLI(t, map[string]string{"CMESH_CREDENTIALS": path}, nil)
			args := []string{"whoami"}
			if tt.addr != "" {
				args = append([]string{"-addr", tt.addr}, args...)
			}
			if code := c.run(context.Background(), args); code != 1 {
				t.Errorf("exit code = %d, want 1", code)
			}
			if !strings.Contains(c.stderr.String(), tt.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantStderr, c.stderr)
			}
		})
	}
}

// fakeAuth stands in for the gateway; calls it does not implement panic.
type fakeAuth struct {
	authv1.AuthServiceClient
	login              func(context.Context, *authv1.LoginRequest) (*authv1.LoginResponse, error)
	refresh            func(context.Context, *authv1.RefreshRequest) (*authv1.LoginResponse, error)
	logout             func(context.Context, *authv1.LogoutRequest) (*authv1.LogoutResponse, error)
	changePassword     func(context.Context, *authv1.ChangePasswordRequest) (*authv1.ChangePasswordResponse, error)
	whoAmI             func(context.Context, *authv1.WhoAmIRequest) (*authv1.WhoAmIResponse, error)
	listRoles          func(context.Context, *authv1.ListRolesRequest) (*authv1.ListRolesResponse, error)
	listSigningKeys    func(context.Context, *authv1.ListSigningKeysRequest) (*authv1.ListSigningKeysResponse, error)
	listTenants        func(context.Context, *authv1.ListTenantsRequest) (*authv1.ListTenantsResponse, error)
	createTenant       func(context.Context, *authv1.CreateTenantRequest) (*authv1.Tenant, error)
	revokeUserSessions func(context.Context, *authv1.RevokeUserSessionsRequest) (*authv1.RevokeUserSessionsResponse, error)
	createAPIKey       func(context.Context, *authv1.CreateApiKeyRequest) (*authv1.CreateApiKeyResponse, error)
	listAuditRecords   func(context.Context, *authv1.ListAuditRecordsRequest) (*authv1.ListAuditRecordsResponse, error)
	verifyAuditChain   func(context.Context, *authv1.VerifyAuditChainRequest) (*authv1.VerifyAuditChainResponse, error)
}

func (f *fakeAuth) Login(ctx context.Context, in *authv1.LoginRequest, _ ...grpc.CallOption) (*authv1.LoginResponse, error) {
	return f.login(ctx, in)
}

func (f *fakeAuth) Refresh(ctx context.Context, in *authv1.RefreshRequest, _ ...grpc.CallOption) (*authv1.LoginResponse, error) {
	return f.refresh(ctx, in)
}

func (f *fakeAuth) Logout(ctx context.Context, in *authv1.LogoutRequest, _ ...grpc.CallOption) (*authv1.LogoutResponse, error) {
	return f.logout(ctx, in)
}

func (f *fakeAuth) ChangePassword(ctx context.Context, in *authv1.ChangePasswordRequest, _ ...grpc.CallOption) (*authv1.ChangePasswordResponse, error) {
	return f.changePassword(ctx, in)
}

func (f *fakeAuth) WhoAmI(ctx context.Context, in *authv1.WhoAmIRequest, _ ...grpc.CallOption) (*authv1.WhoAmIResponse, error) {
	return f.whoAmI(ctx, in)
}

func (f *fakeAuth) ListRoles(ctx context.Context, in *authv1.ListRolesRequest, _ ...grpc.CallOption) (*authv1.ListRolesResponse, error) {
	return f.listRoles(ctx, in)
}

func (f *fakeAuth) ListSigningKeys(ctx context.Context, in *authv1.ListSigningKeysRequest, _ ...grpc.CallOption) (*authv1.ListSigningKeysResponse, error) {
	return f.listSigningKeys(ctx, in)
}

func (f *fakeAuth) ListTenants(ctx context.Context, in *authv1.ListTenantsRequest, _ ...grpc.CallOption) (*authv1.ListTenantsResponse, error) {
	return f.listTenants(ctx, in)
}

func (f *fakeAuth) CreateTenant(ctx context.Context, in *authv1.CreateTenantRequest, _ ...grpc.CallOption) (*authv1.Tenant, error) {
	return f.createTenant(ctx, in)
}

func (f *fakeAuth) RevokeUserSessions(ctx context.Context, in *authv1.RevokeUserSessionsRequest, _ ...grpc.CallOption) (*authv1.RevokeUserSessionsResponse, error) {
	return f.revokeUserSessions(ctx, in)
}

func (f *fakeAuth) CreateApiKey(ctx context.Context, in *authv1.CreateApiKeyRequest, _ ...grpc.CallOption) (*authv1.CreateApiKeyResponse, error) {
	return f.createAPIKey(ctx, in)
}

func (f *fakeAuth) ListAuditRecords(ctx context.Context, in *authv1.ListAuditRecordsRequest, _ ...grpc.CallOption) (*authv1.ListAuditRecordsResponse, error) {
	return f.listAuditRecords(ctx, in)
}

func (f *fakeAuth) VerifyAuditChain(ctx context.Context, in *authv1.VerifyAuditChainRequest, _ ...grpc.CallOption) (*authv1.VerifyAuditChainResponse, error) {
	return f.verifyAuditChain(ctx, in)
}

// bearer returns the access token a call carried, or "" without one.
func bearer(ctx context.Context) string {
	md, _ := metadata.FromOutgoingContext(ctx)
	got := md.Get("authorization")
	if len(got) != 1 {
		return ""
	}
	return strings.TrimPrefix(got[0], "Bearer ")
}

// loggedIn returns the environment of a CLI whose credentials file holds c.
func loggedIn(t *testing.T, c storedCredentials) map[string]string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "credentials.json")
	if err := saveCredentials(path, c); err != nil {
		t.Fatal(err)
	}
	return map[string]string{"CMESH_CREDENTIALS": path}
}

// fresh are stored credentials whose access token is valid for an hour.
var fresh = storedCredentials{Addr: defaultAddr, AccessToken: "stored-token", ExpireTime: testNow.Add(time.Hour)}

func TestTenantsListAll(t *testing.T) {
	t.Parallel()
	pages := map[string]*authv1.ListTenantsResponse{
		"":   {Tenants: []*authv1.Tenant{testTenants[0]}, NextPageToken: "p2"},
		"p2": {Tenants: []*authv1.Tenant{testTenants[1]}},
	}
	client := &fakeAuth{listTenants: func(ctx context.Context, req *authv1.ListTenantsRequest) (*authv1.ListTenantsResponse, error) {
		md, _ := metadata.FromOutgoingContext(ctx)
		if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer script-token" {
			t.Errorf("authorization = %q, want [Bearer script-token]", got)
		}
		if req.GetPageSize() != 1 {
			t.Errorf("page_size = %d, want 1", req.GetPageSize())
		}
		return pages[req.GetPageToken()], nil
	}}
	env := map[string]string{"CMESH_TOKEN": "script-token"}

	c := newTestCLI(t, env, client)
	if code := c.run(context.Background(), []string{"-o", "json", "tenants", "list", "-all", "-page-size", "1"}); code != 0 {
		t.Fatalf("exit code = %d, want 0; stderr:\n%s", code, c.stderr)
	}
	var got authv1.ListTenantsResponse
	if err := protojson.Unmarshal(c.stdout.Bytes(), &got); err != nil {
		t.Fatalf("stdout is not a ListTenantsResponse: %v\n%s", err, c.stdout)
	}
	if want := (&authv1.ListTenantsResponse{Tenants: testTenants}); !proto.Equal(&got, want) {
		t.Errorf("got %v, want %v", &got, want)
	}

	// Without -all a table shows one page and says there is more.
	c = newTestCLI(t, env, client)
	if code := c.run(context.Background(), []string{"tenants", "list", "-page-size", "1"}); code != 0 {
		t.Fatalf("exit code = %d, want 0; stderr:\n%s", code, c.stderr)
	}
	if strings.Contains(c.stdout.String(), "globex") || !strings.Contains(c.stdout.String(), "acme") {
		t.Errorf("stdout is not the first page:\n%s", c.stdout)
	}
	if want := "more results: use -all, or -page-token p2"; !strings.Contains(c.stderr.String(), want) {
		t.Errorf("stderr does not contain %q:\n%s", want, c.stderr)
	}
}

func TestLogin(t *testing.T) {
	t.Parallel()
	const token, refreshToken, password = "eyJ.secret.token", "rt-secret", "correct horse battery"
	expire, refreshExpire := testNow.Add(15*time.Minute), testNow.Add(30*24*time.Hour)
	client := &fakeAuth{login: func(_ context.Context, req *authv1.LoginRequest) (*authv1.LoginResponse, error) {
		want := &authv1.LoginRequest{Tenant: "acme", Email: "ada@acme.example", Password: password}
		if !proto.Equal(req, want) {
			t.Errorf("login request = %v, want %v", req, want)
		}
		return &authv1.LoginResponse{
			AccessToken: token, TokenType: "Bearer", ExpiresIn: 900, ExpireTime: timestamppb.New(expire),
			RefreshToken: refreshToken, RefreshExpireTime: timestamppb.New(refreshExpire),
		}, nil
	}}
	bootstrap := filepath.Join(t.TempDir(), "acme-admin.json")
	// Extra fields, as a bootstrap file may carry, are ignored; -email overrides the file.
	content := `{"tenant":"acme","email":"old@acme.example","password":"` + password + `","role":"admin"}`
	if err := os.WriteFile(bootstrap, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		args  []string
		stdin string
	}{
		{"flags and stdin", []string{"login", "-tenant", "acme", "-email", "ada@acme.example", "-password-stdin"}, password + "\n"},
		{"prompt reads a line", []string{"login", "-tenant", "acme", "-email", "ada@acme.example"}, password + "\nmore input\n"},
		{"request file", []string{"login", "-f", bootstrap, "-email", "ada@acme.example"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCLI(t, nil, client)
			c.stdin.Reset(tt.stdin)
			if code := c.run(context.Background(), tt.args); code != 0 {
				t.Fatalf("exit code = %d, want 0; stderr:\n%s", code, c.stderr)
			}
			if want := "logged in as ada@acme.example (tenant acme), token expires 2026-11-22T12:15:00Z, session renewable until 2026-12-22T12:00:00Z\n"; c.stdout.String() != want {
				t.Errorf("stdout = %q, want %q", c.stdout, want)
			}
			for _, secret := range []string{token, refreshToken, password} {
				if strings.Contains(c.stdout.String()+c.stderr.String(), secret) {
					t.Errorf("output shows %q", secret)
				}
			}
			creds, err := loadCredentials(c.getenv("CMESH_CREDENTIALS"))
			if err != nil {
				t.Fatal(err)
			}
			want := storedCredentials{Addr: defaultAddr, AccessToken: token, ExpireTime: expire, RefreshToken: refreshToken, RefreshExpireTime: refreshExpire}
			if creds != want {
				t.Errorf("stored %+v, want %+v", creds, want)
			}
			fi, err := os.Stat(c.getenv("CMESH_CREDENTIALS"))
			if err != nil {
				t.Fatal(err)
			}
			if mode := fi.Mode().Perm(); mode != 0o600 {
				t.Errorf("credentials file mode = %v, want 0600", mode)
			}
		})
	}
}

func TestSigningKeysAlias(t *testing.T) {
	t.Parallel()
	for _, group := range []string{"signing-keys", "keys"} {
		t.Run(group, func(t *testing.T) {
			t.Parallel()
			client := &fakeAuth{listSigningKeys: func(context.Context, *authv1.ListSigningKeysRequest) (*authv1.ListSigningKeysResponse, error) {
				return &authv1.ListSigningKeysResponse{Keys: []*authv1.SigningKey{{Kid: "k1", Alg: "EdDSA", Active: true}}}, nil
			}}
			c := newTestCLI(t, nil, client)
			if code := c.run(t.Context(), []string{group, "list"}); code != 0 {
				t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
			}
			if !strings.Contains(c.stdout.String(), "k1   EdDSA  yes") {
				t.Errorf("stdout does not list the key:\n%s", c.stdout)
			}
		})
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	var ids []string
	client := &fakeAuth{createTenant: func(_ context.Context, req *authv1.CreateTenantRequest) (*authv1.Tenant, error) {
		ids = append(ids, req.GetRequestId())
		return testTenants[0], nil
	}}
	env := loggedIn(t, fresh)
	for _, args := range [][]string{
		{"tenants", "create", "-slug", "acme", "-name", "Acme Corp"},
		{"tenants", "create", "-slug", "acme", "-name", "Acme Corp"},
		{"tenants", "create", "-slug", "acme", "-name", "Acme Corp", "-request-id", "Retry_1.a-b"},
	} {
		c := newTestCLI(t, env, client)
		if code := c.run(t.Context(), args); code != 0 {
			t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
		}
	}
	for _, id := range ids[:2] {
		if !strings.HasPrefix(id, "cmesh-") || !validRequestID(id) {
			t.Errorf("generated request id %q is not a valid cmesh id", id)
		}
	}
	if ids[0] == ids[1] {
		t.Errorf("two invocations sent the same request id %q", ids[0])
	}
	if ids[2] != "Retry_1.a-b" {
		t.Errorf("request id = %q, want the one given", ids[2])
	}
}

// TestRequestIDHint checks that when a create call's answer is lost, the error says how to
// repeat it safely, and that a refused call does not.
func TestRequestIDHint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		err      error
		wantHint bool
	}{
		{"unreachable", status.Error(codes.Unavailable, "connection reset"), true},
		{"timed out", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), true},
		{"refused", status.Error(codes.AlreadyExists, "slug taken"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := &fakeAuth{createTenant: func(context.Context, *authv1.CreateTenantRequest) (*authv1.Tenant, error) {
				return nil, tt.err
			}}
			c := newTestCLI(t, loggedIn(t, fresh), client)
			if code := c.run(t.Context(), []string{"tenants", "create", "-slug", "acme", "-name", "Acme", "-request-id", "r-1"}); code != 1 {
				t.Errorf("exit code = %d, want 1", code)
			}
			hint := "repeat the command with -request-id r-1"
			if got := strings.Contains(c.stderr.String(), hint); got != tt.wantHint {
				t.Errorf("hint shown = %v, want %v; stderr:\n%s", got, tt.wantHint, c.stderr)
			}
		})
	}
}

func TestValidRequestID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   string
		want bool
	}{
		{"a", true},
		{"cmesh-" + strings.Repeat("a", 58), true},
		{"cmesh-" + strings.Repeat("a", 59), false},
		{"A-z_0.9", true},
		{"", false},
		{"a b", false},
		{"a/b", false},
		{"é", false},
	}
	for _, tt := range tests {
		if got := validRequestID(tt.id); got != tt.want {
			t.Errorf("validRequestID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
	if id := newRequestID(); !validRequestID(id) {
		t.Errorf("newRequestID() = %q is not valid", id)
	}
}
