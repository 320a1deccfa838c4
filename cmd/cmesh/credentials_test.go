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
	want := storedCredentials{Addr: "localhost:8443", AccessToken: "tok", ExpireTime: testNow.Add(time.Hour)}

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
	if got.Addr != want.Addr || got.AccessToken != want.AccessToken || !got.ExpireTime.Equal(want.ExpireTime) {
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

func TestCredentialsExpired(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		expire time.Time
		want   bool
	}{
		{"future", testNow.Add(time.Second), false},
		{"now", testNow, true},
		{"past", testNow.Add(-time.Hour), true},
		{"unknown", time.Time{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := storedCredentials{AccessToken: "tok", ExpireTime: tt.expire}
			if got := c.expired(testNow); got != tt.want {
				t.Errorf("expired = %v, want %v", got, tt.want)
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
	got, err := c.accessToken()
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
