package main

import (
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
)

// The probes' health-only port is off unless set (flag or CM_CAMPAIGNS_HEALTH_LISTEN); connections age out after
// the default maximum unless set; a negative age is refused.
func TestHealthAndConnectionAgeFlags(t *testing.T) {
	base := []string{"-postgres-url", "postgres://x", "-tls-cert", "c", "-tls-key", "k", "-tls-ca", "ca"}
	s, err := parse(base)
	if err != nil || s.cfg.HealthListen != "" || s.cfg.ConnectionAge != grpcserver.DefaultConnectionAge {
		t.Fatalf("defaults: health %q, age %+v, %v; want none, %+v", s.cfg.HealthListen, s.cfg.ConnectionAge, err, grpcserver.DefaultConnectionAge)
	}
	t.Setenv("CM_CAMPAIGNS_HEALTH_LISTEN", ":8081")
	s, err = parse(append([]string{"-max-connection-age", "1m", "-max-connection-age-grace", "30s"}, base...))
	if want := (grpcserver.ConnectionAge{Max: time.Minute, Grace: 30 * time.Second}); err != nil || s.cfg.HealthListen != ":8081" || s.cfg.ConnectionAge != want {
		t.Errorf("set: health %q, age %+v, %v; want :8081, %+v", s.cfg.HealthListen, s.cfg.ConnectionAge, err, want)
	}
	if _, err := parse(append([]string{"-max-connection-age", "-1s"}, base...)); err == nil || !strings.Contains(err.Error(), "-max-connection-age") {
		t.Errorf("a negative age: %v, want it refused", err)
	}
}
