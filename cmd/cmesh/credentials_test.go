package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCredentialsRoundTrip(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "cmesh")
	path := filepath.Join(dir, "credentials.json")
	want := storedCredentials{Addr: "localhost:8443", AccessToken: "tok", ExpireTime: testNow.Add(time.Hour), RefreshToken: "rt", RefreshExpireTime: testNow.Add(48 * time.Hour)}

	// A file left with loose permissions is replaced by a private one.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := saveCredentials(path, want); err != nil {
		t.Fatalf("save: %v", err)
	}
	got, err := loadCredentials(path)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if got != want {
		t.Errorf("loaded %+v, want %+v", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("file mode = %v, want 0600", mode)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the credentials file", len(entries))
	}
}

func TestSaveCredentialsCreatesPrivateDirectory(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "config", "cmesh")
	if err := saveCredentials(filepath.Join(dir, "credentials.json"), storedCredentials{AccessToken: "tok"}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o700 {
		t.Errorf("directory mode = %v, want 0700", mode)
	}
}

func TestPlanToken(t *testing.T) {
	t.Parallel()
	withRefresh := func(access, refresh time.Time) *storedCredentials {
		return &storedCredentials{AccessToken: "at", ExpireTime: access, RefreshToken: "rt", RefreshExpireTime: refresh}
	}
	accessOnly := func(access time.Time) *storedCredentials {
		return &storedCredentials{AccessToken: "at", ExpireTime: access}
	}
	day := testNow.Add(24 * time.Hour)
	tests := []struct {
		name  string
		env   string
		creds *storedCredentials
		want  tokenPlan
	}{
		{"nothing stored", "", nil, planLogin},
		{"env token, nothing stored", "tok", nil, planEnv},
		{"env token wins over an expired session", "tok", withRefresh(testNow.Add(-time.Hour), day), planEnv},
		{"env token wins over a fresh token", "tok", accessOnly(testNow.Add(time.Hour)), planEnv},
		{"fresh", "", withRefresh(testNow.Add(time.Hour), day), planStored},
		{"fresh for 31s", "", withRefresh(testNow.Add(31*time.Second), day), planStored},
		{"expires in 30s", "", withRefresh(testNow.Add(30*time.Second), day), planRefresh},
		{"expires in 1s", "", withRefresh(testNow.Add(time.Second), day), planRefresh},
		{"expires now", "", withRefresh(testNow, day), planRefresh},
		{"expired", "", withRefresh(testNow.Add(-time.Hour), day), planRefresh},
		{"expired, refresh expiry unknown", "", withRefresh(testNow.Add(-time.Hour), time.Time{}), planRefresh},
		{"expiry unknown, with refresh token", "", withRefresh(time.Time{}, day), planStored},
		{"only a refresh token", "", &storedCredentials{RefreshToken: "rt", RefreshExpireTime: day}, planRefresh},
		{"expired, refresh expires now", "", withRefresh(testNow.Add(-time.Hour), testNow), planLogin},
		{"expired, refresh expired", "", withRefresh(testNow.Add(-time.Hour), testNow.Add(-time.Minute)), planLogin},
		{"expires in 10s, refresh expired: use it while it lasts", "", withRefresh(testNow.Add(10*time.Second), testNow.Add(-time.Minute)), planStored},
		{"expires in 10s, no refresh token", "", accessOnly(testNow.Add(10 * time.Second)), planStored},
		{"expired, no refresh token", "", accessOnly(testNow.Add(-time.Second)), planLogin},
		{"expires now, no refresh token", "", accessOnly(testNow), planLogin},
		{"expiry unknown, no refresh token", "", accessOnly(time.Time{}), planStored},
		{"empty file", "", &storedCredentials{}, planLogin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := planToken(tt.env, tt.creds, testNow); got != tt.want {
				t.Errorf("planToken = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCredentialsPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"explicit", map[string]string{"CMESH_CREDENTIALS": "/tmp/c.json", "XDG_CONFIG_HOME": "/xdg", "HOME": "/home/ada"}, "/tmp/c.json"},
		{"xdg", map[string]string{"XDG_CONFIG_HOME": "/xdg", "HOME": "/home/ada"}, "/xdg/cmesh/credentials.json"},
		{"home", map[string]string{"HOME": "/home/ada"}, "/home/ada/.config/cmesh/credentials.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := credentialsPath(func(k string) string { return tt.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if got != filepath.FromSlash(tt.want) {
				t.Errorf("path = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTokenFromEnvironment(t *testing.T) {
	t.Parallel()
	// CMESH_TOKEN wins over a stored token, even an expired one.
	path := filepath.Join(t.TempDir(), "credentials.json")
	if err := saveCredentials(path, storedCredentials{Addr: defaultAddr, AccessToken: "stored", ExpireTime: testNow.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	c := newTestCLI(t, map[string]string{"CMESH_CREDENTIALS": path, "CMESH_TOKEN": "from-env\n"}, nil)
	c.addr = defaultAddr
	got, err := c.accessToken(t.Context())
	if err != nil || got != "from-env" {
		t.Errorf("accessToken() = %q, %v; want from-env", got, err)
	}
}

func TestLogoutDeletesCredentials(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "credentials.json")
	if err := saveCredentials(path, storedCredentials{AccessToken: "tok"}); err != nil {
		t.Fatal(err)
	}
	c := newTestCLI(t, map[string]string{"CMESH_CREDENTIALS": path}, nil)
	if code := c.run(t.Context(), []string{"logout"}); code != 0 {
		t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("credentials file still there: %v", err)
	}
	// A second logout has nothing to delete and still succeeds.
	c = newTestCLI(t, map[string]string{"CMESH_CREDENTIALS": path}, nil)
	if code := c.run(t.Context(), []string{"logout"}); code != 0 {
		t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
	}
}
