package main

import (
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
)

var requiredArgs = []string{"-postgres-url", "postgres://dsr@db/dsr", "-privacy-key-file", "privacy-key", "-key-encryption-keys-file", "dsr-kek",
	"-tls-cert", "c.pem", "-tls-key", "k.pem", "-tls-ca", "ca.pem", "-nats-password-file", "nats-dsr"}

// The defaults are the documented ones, the environment sets what flags set, and every required
// or bounded flag is refused by name when missing or out of range.
func TestFlags(t *testing.T) {
	s, err := parse(requiredArgs)
	if err != nil {
		t.Fatal(err)
	}
	c := s.cfg
	if c.Listen != "127.0.0.1:7105" || c.AdminListen != "127.0.0.1:9105" || c.Workers != 256 || c.Lease != 2*time.Minute || c.PollInterval != time.Second {
		t.Errorf("defaults: %s %s workers %d lease %s poll %s", c.Listen, c.AdminListen, c.Workers, c.Lease, c.PollInterval)
	}
	if len(c.Participants) != 3 || c.Participants[0].Name != "analytics" || c.Participants[1].Name != "auth" || c.Participants[2].Name != "delivery" {
		t.Errorf("default participants: %+v", c.Participants)
	}
	t.Setenv("CM_DSR_PARTICIPANTS", "analytics=10.0.0.4:7104")
	if s, err := parse(requiredArgs); err != nil || len(s.cfg.Participants) != 1 || s.cfg.Participants[0].Addr != "10.0.0.4:7104" {
		t.Errorf("participants from the environment: %+v %v", s.cfg.Participants, err)
	}
	without := func(flag string) []string {
		var out []string
		for i := 0; i < len(requiredArgs); i += 2 {
			if requiredArgs[i] != flag {
				out = append(out, requiredArgs[i], requiredArgs[i+1])
			}
		}
		return out
	}
	for _, flag := range []string{"-postgres-url", "-privacy-key-file", "-key-encryption-keys-file", "-tls-cert"} {
		if _, err := parse(without(flag)); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("without %s: err = %v, want it named", flag, err)
		}
	}
	for _, args := range [][]string{{"-workers", "0"}, {"-workers", "1025"}, {"-lease", "500ms"}, {"-poll-interval", "2m"}, {"-participants", "analytics"}} {
		if _, err := parse(append(args, requiredArgs...)); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("parse %v: err = %v, want it refused naming %s", args, err, args[0])
		}
	}
}

// The probes' health-only port is off unless set (flag or CM_DSR_HEALTH_LISTEN); connections age out after
// the default maximum unless set; a negative age is refused.
func TestHealthAndConnectionAgeFlags(t *testing.T) {
	base := requiredArgs
	s, err := parse(base)
	if err != nil || s.cfg.HealthListen != "" || s.cfg.ConnectionAge != grpcserver.DefaultConnectionAge {
		t.Fatalf("defaults: health %q, age %+v, %v; want none, %+v", s.cfg.HealthListen, s.cfg.ConnectionAge, err, grpcserver.DefaultConnectionAge)
	}
	t.Setenv("CM_DSR_HEALTH_LISTEN", ":8081")
	s, err = parse(append([]string{"-max-connection-age", "1m", "-max-connection-age-grace", "30s"}, base...))
	if want := (grpcserver.ConnectionAge{Max: time.Minute, Grace: 30 * time.Second}); err != nil || s.cfg.HealthListen != ":8081" || s.cfg.ConnectionAge != want {
		t.Errorf("set: health %q, age %+v, %v; want :8081, %+v", s.cfg.HealthListen, s.cfg.ConnectionAge, err, want)
	}
	if _, err := parse(append([]string{"-max-connection-age", "-1s"}, base...)); err == nil || !strings.Contains(err.Error(), "-max-connection-age") {
		t.Errorf("a negative age: %v, want it refused", err)
	}
}
