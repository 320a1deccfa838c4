package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

// expiring are stored credentials whose access token expires within the refresh margin
// and whose refresh token is valid for a day.
var expiring = storedCredentials{
	Addr:              defaultAddr,
	AccessToken:       "old-access",
	ExpireTime:        testNow.Add(10 * time.Second),
	RefreshToken:      "old-refresh",
	RefreshExpireTime: testNow.Add(24 * time.Hour),
}

// renewed is what the fake Refresh returns.
var renewed = &authv1.LoginResponse{
	AccessToken:       "new-access",
	TokenType:         "Bearer",
	ExpiresIn:         900,
	ExpireTime:        timestamppb.New(testNow.Add(15 * time.Minute)),
	RefreshToken:      "new-refresh",
	RefreshExpireTime: timestamppb.New(testNow.Add(30 * 24 * time.Hour)),
}

// TestAutoRefresh runs whoami with each kind of credential and checks which token the call
// carried, whether the session was renewed and what is stored afterwards.
func TestAutoRefresh(t *testing.T) {
	t.Parallel()
	expired := expiring
	expired.ExpireTime = testNow.Add(-time.Hour)
	dead := expired
	dead.RefreshExpireTime = testNow.Add(-time.Minute)
	tests := []struct {
		name        string
		creds       storedCredentials
		envToken    string
		wantBearer  string // "" when no call may be made
		wantRefresh bool
		wantStored  string // access token stored afterwards
		wantStderr  string
	}{
		{name: "fresh token is used", creds: fresh, wantBearer: "stored-token", wantStored: "stored-token"},
		{name: "token expiring soon is renewed", creds: expiring, wantBearer: "new-access", wantRefresh: true, wantStored: "new-access"},
		{name: "expired token is renewed", creds: expired, wantBearer: "new-access", wantRefresh: true, wantStored: "new-access"},
		{name: "env token is never renewed", creds: expired, envToken: "env-token", wantBearer: "env-token", wantStored: "old-access"},
		{name: "expired refresh token", creds: dead, wantStored: "old-access", wantStderr: "cmesh: session expired; run cmesh login\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var refreshes atomic.Int32
			client := &fakeAuth{
				refresh: func(ctx context.Context, req *authv1.RefreshRequest) (*authv1.LoginResponse, error) {
					refreshes.Add(1)
					if bearer(ctx) != "" {
						t.Error("Refresh carried an access token")
					}
					if req.GetRefreshToken() != "old-refresh" {
						t.Errorf("refresh_token = %q, want old-refresh", req.GetRefreshToken())
					}
					return renewed, nil
				},
				whoAmI: func(ctx context.Context, _ *authv1.WhoAmIRequest) (*authv1.WhoAmIResponse, error) {
					if got := bearer(ctx); got != tt.wantBearer {
						t.Errorf("WhoAmI carried %q, want %q", got, tt.wantBearer)
					}
					return &authv1.WhoAmIResponse{Subject: "u1"}, nil
				},
			}
			env := loggedIn(t, tt.creds)
			if tt.envToken != "" {
				env["CMESH_TOKEN"] = tt.envToken
			}
			c := newTestCLI(t, env, client)
			code := c.run(t.Context(), []string{"whoami"})
			if wantCode := map[bool]int{true: 0, false: 1}[tt.wantBearer != ""]; code != wantCode {
				t.Errorf("exit code = %d, want %d; stderr:\n%s", code, wantCode, c.stderr)
			}
			if c.stderr.String() != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", c.stderr, tt.wantStderr)
			}
			if got := refreshes.Load() == 1; got != tt.wantRefresh {
				t.Errorf("refreshed %d times, want refresh %v", refreshes.Load(), tt.wantRefresh)
			}
			stored, err := loadCredentials(env["CMESH_CREDENTIALS"])
			if err != nil {
				t.Fatal(err)
			}
			if stored.AccessToken != tt.wantStored {
				t.Errorf("stored access token %q, want %q", stored.AccessToken, tt.wantStored)
			}
			if tt.wantRefresh {
				want := credentialsFrom(defaultAddr, renewed, testNow)
				if stored != want {
					t.Errorf("stored %+v, want %+v", stored, want)
				}
			}
		})
	}
}

func TestRefreshFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		err        error
		wantStderr string
		wantKept   bool // the credentials file is still there
	}{
		{
			name:       "rejected",
			err:        status.Error(codes.Unauthenticated, "refresh token reused"),
			wantStderr: "cmesh: session expired; run cmesh login\n",
		},
		{
			name:       "unreachable",
			err:        status.Error(codes.Unavailable, "connection refused"),
			wantStderr: "cmesh: renew session: connection refused (Unavailable)\n",
			wantKept:   true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := &fakeAuth{
				refresh: func(context.Context, *authv1.RefreshRequest) (*authv1.LoginResponse, error) { return nil, tt.err },
				createTenant: func(context.Context, *authv1.CreateTenantRequest) (*authv1.Tenant, error) {
					t.Error("the call was made without a token")
					return nil, errors.New("unexpected call")
				},
			}
			env := loggedIn(t, expiring)
			c := newTestCLI(t, env, client)
			if code := c.run(t.Context(), []string{"tenants", "create", "-slug", "acme", "-name", "Acme"}); code != 1 {
				t.Errorf("exit code = %d, want 1", code)
			}
			// No request-id hint: the create call was never sent.
			if c.stderr.String() != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", c.stderr, tt.wantStderr)
			}
			_, err := os.Stat(env["CMESH_CREDENTIALS"])
			if kept := err == nil; kept != tt.wantKept {
				t.Errorf("credentials kept = %v (%v), want %v", kept, err, tt.wantKept)
			}
		})
	}
}

// TestRefreshRereadsUnderLock checks that a cmesh that decided to renew the session uses
// the tokens another cmesh stored meanwhile, instead of presenting the old refresh token
// again, which would make the server end the session.
func TestRefreshRereadsUnderLock(t *testing.T) {
	t.Parallel()
	client := &fakeAuth{refresh: func(context.Context, *authv1.RefreshRequest) (*authv1.LoginResponse, error) {
		t.Error("Refresh called although the stored tokens were renewed")
		return nil, errors.New("unexpected call")
	}}
	env := loggedIn(t, credentialsFrom(defaultAddr, renewed, testNow))
	c := newTestCLI(t, env, client)
	c.addr, c.timeout = defaultAddr, time.Second
	got, err := c.refresh(t.Context(), env["CMESH_CREDENTIALS"])
	if err != nil || got != "new-access" {
		t.Errorf("refresh = %q, %v; want new-access", got, err)
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		creds      *storedCredentials
		logoutErr  error
		wantCalled bool
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{
			name:       "session ended",
			creds:      &expiring,
			wantCalled: true,
			wantStdout: "logged out: ended the session and deleted",
		},
		{
			name:       "server refuses the refresh token",
			creds:      &expiring,
			logoutErr:  status.Error(codes.Unauthenticated, "unknown refresh token"),
			wantCalled: true,
			wantStdout: "logged out: deleted",
		},
		{
			name:       "server fails",
			creds:      &expiring,
			logoutErr:  status.Error(codes.Internal, "internal error"),
			wantCalled: true,
			wantStdout: "logged out: deleted",
		},
		{
			name:       "gateway unreachable",
			creds:      &expiring,
			logoutErr:  status.Error(codes.Unavailable, "connection refused"),
			wantCalled: true,
			wantCode:   1,
			wantStdout: "logged out: deleted",
			wantStderr: "could not end the session on the server",
		},
		{
			name:       "no refresh token stored",
			creds:      &fresh,
			wantStdout: "logged out: deleted",
		},
		{
			name:       "session of another gateway",
			creds:      &storedCredentials{Addr: "gw.example.com:443", AccessToken: "at", RefreshToken: "rt"},
			wantStdout: "logged out: deleted",
			wantStderr: "the session is on gw.example.com:443, not localhost:8443; not ending it",
		},
		{
			name:       "not logged in",
			wantStdout: "not logged in",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			called := false
			client := &fakeAuth{logout: func(_ context.Context, req *authv1.LogoutRequest) (*authv1.LogoutResponse, error) {
				called = true
				if req.GetRefreshToken() != "old-refresh" {
					t.Errorf("refresh_token = %q, want old-refresh", req.GetRefreshToken())
				}
				return &authv1.LogoutResponse{}, tt.logoutErr
			}}
			env := map[string]string{"CMESH_CREDENTIALS": filepath.Join(t.TempDir(), "credentials.json")}
			if tt.creds != nil {
				env = loggedIn(t, *tt.creds)
			}
			var c *testCLI
			if tt.wantCalled {
				c = newTestCLI(t, env, client)
			} else {
				c = newTestCLI(t, env, nil) // fails the test if it dials
			}
			if code := c.run(t.Context(), []string{"logout"}); code != tt.wantCode {
				t.Errorf("exit code = %d, want %d; stderr:\n%s", code, tt.wantCode, c.stderr)
			}
			if called != tt.wantCalled {
				t.Errorf("Logout called = %v, want %v", called, tt.wantCalled)
			}
			if !strings.HasPrefix(c.stdout.String(), tt.wantStdout) {
				t.Errorf("stdout = %q, want it to start with %q", c.stdout, tt.wantStdout)
			}
			if !strings.Contains(c.stderr.String(), tt.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantStderr, c.stderr)
			}
			if _, err := os.Stat(env["CMESH_CREDENTIALS"]); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("credentials file still there: %v", err)
			}
		})
	}
}

func TestPassword(t *testing.T) {
	t.Parallel()
	const current, next = "old password 123", "new password 456"
	dir := t.TempDir()
	currentFile, nextFile := filepath.Join(dir, "current"), filepath.Join(dir, "new")
	for path, pw := range map[string]string{currentFile: current + "\n", nextFile: next} {
		if err := os.WriteFile(path, []byte(pw), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name       string
		args       []string
		stdin      string
		wantCode   int
		wantStderr string
	}{
		{name: "stdin", args: []string{"-stdin"}, stdin: current + "\n" + next + "\n"},
		{name: "stdin without final newline", args: []string{"-stdin"}, stdin: current + "\r\n" + next},
		{name: "files", args: []string{"-current-file", currentFile, "-new-file", nextFile}},
		{name: "prompts read lines of stdin", stdin: current + "\n" + next + "\n"},
		{name: "one file, one line", args: []string{"-new-file", nextFile}, stdin: current + "\n"},
		{name: "one line only", args: []string{"-stdin"}, stdin: current + "\n", wantCode: 1, wantStderr: "new password: read password: empty password"},
		{name: "same password", args: []string{"-stdin"}, stdin: current + "\n" + current + "\n", wantCode: 1, wantStderr: "the new password is the current one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := &fakeAuth{changePassword: func(ctx context.Context, req *authv1.ChangePasswordRequest) (*authv1.ChangePasswordResponse, error) {
				if got := bearer(ctx); got != "stored-token" {
					t.Errorf("ChangePassword carried %q, want stored-token", got)
				}
				want := &authv1.ChangePasswordRequest{CurrentPassword: current, NewPassword: next}
				if !proto.Equal(req, want) {
					t.Errorf("request = %v, want %v", req, want)
				}
				return &authv1.ChangePasswordResponse{}, nil
			}}
			env := loggedIn(t, fresh)
			c := newTestCLI(t, env, client)
			c.stdin.Reset(tt.stdin)
			if code := c.run(t.Context(), append([]string{"password"}, tt.args...)); code != tt.wantCode {
				t.Fatalf("exit code = %d, want %d; stderr:\n%s", code, tt.wantCode, c.stderr)
			}
			if !strings.Contains(c.stderr.String(), tt.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantStderr, c.stderr)
			}
			_, err := os.Stat(env["CMESH_CREDENTIALS"])
			if tt.wantCode != 0 {
				if err != nil {
					t.Errorf("credentials deleted although the password was not changed: %v", err)
				}
				return
			}
			if want := "password changed; all your sessions were ended: run cmesh login with the new password\n"; c.stdout.String() != want {
				t.Errorf("stdout = %q, want %q", c.stdout, want)
			}
			if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("credentials file still there: %v", err)
			}
			if out := c.stdout.String() + c.stderr.String(); strings.Contains(out, current) || strings.Contains(out, next) {
				t.Errorf("output shows a password:\n%s", out)
			}
		})
	}
}
