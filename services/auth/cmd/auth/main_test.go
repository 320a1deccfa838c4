package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
)

// auth refuses to start without a key-encryption key, and says how to give it one; errors
// never echo key material.
func TestParseKeyEncryptionKeys(t *testing.T) {
	base := []string{"-postgres-url", "postgres://x", "-tls-cert", "c", "-tls-key", "k", "-tls-ca", "ca"}
	good := "kek1:" + strings.Repeat("A", 43) + "="
	file := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(file, []byte(good+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		args []string
		want string // "" for success
	}{
		"none":       {nil, "no key-encryption key configured"},
		"flag":       {[]string{"-key-encryption-keys", good}, ""},
		"file":       {[]string{"-key-encryption-keys-file", file}, ""},
		"both":       {[]string{"-key-encryption-keys", good, "-key-encryption-keys-file", file}, "not both"},
		"short key":  {[]string{"-key-encryption-keys", "kek1:c2VjcmV0LWtleQ=="}, `key-encryption key "kek1": want 32 random bytes`},
		"no id":      {[]string{"-key-encryption-keys", strings.Repeat("A", 43) + "="}, "want id:base64"},
		"missing":    {[]string{"-key-encryption-keys-file", file + ".nope"}, "read -key-encryption-keys-file"},
		"rotation":   {[]string{"-key-encryption-keys", "kek2:" + strings.Repeat("B", 43) + "=," + good}, ""},
		"duplicate":  {[]string{"-key-encryption-keys", good + "," + good}, "appears twice"},
		"not base64": {[]string{"-key-encryption-keys", "kek1:not base64 at all!"}, "want 32 random bytes"},
	} {
		_, err := parse(append(append([]string{}, base...), c.args...))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error saying %q", name, err, c.want)
		case err != nil && (strings.Contains(err.Error(), "c2VjcmV0") || strings.Contains(err.Error(), "AAAA") || strings.Contains(err.Error(), "not base64")):
			t.Errorf("%s: the error shows key material: %v", name, err)
		}
	}
}

// The probes' health-only port is off unless set (flag or CM_AUTH_HEALTH_LISTEN); connections age out after
// the default maximum unless set; a negative age is refused.
func TestHealthAndConnectionAgeFlags(t *testing.T) {
	base := []string{"-postgres-url", "postgres://x", "-tls-cert", "c", "-tls-key", "k", "-tls-ca", "ca", "-key-encryption-keys", "kek1:" + strings.Repeat("A", 43) + "="}
	s, err := parse(base)
	if err != nil || s.cfg.HealthListen != "" || s.cfg.ConnectionAge != grpcserver.DefaultConnectionAge {
		t.Fatalf("defaults: health %q, age %+v, %v; want none, %+v", s.cfg.HealthListen, s.cfg.ConnectionAge, err, grpcserver.DefaultConnectionAge)
	}
	t.Setenv("CM_AUTH_HEALTH_LISTEN", ":8081")
	s, err = parse(append([]string{"-max-connection-age", "1m", "-max-connection-age-grace", "30s"}, base...))
	if want := (grpcserver.ConnectionAge{Max: time.Minute, Grace: 30 * time.Second}); err != nil || s.cfg.HealthListen != ":8081" || s.cfg.ConnectionAge != want {
		t.Errorf("set: health %q, age %+v, %v; want :8081, %+v", s.cfg.HealthListen, s.cfg.ConnectionAge, err, want)
	}
	if _, err := parse(append([]string{"-max-connection-age", "-1s"}, base...)); err == nil || !strings.Contains(err.Error(), "-max-connection-age") {
		t.Errorf("a negative age: %v, want it refused", err)
	}
}
