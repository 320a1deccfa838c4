package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/services/analytics/app"
)

const writerfaultPkg = "github.com/campaignmesh/campaignmesh/services/analytics/writer/writerfault"

// The fault injection is linked into the chaos build only: the binary that ships cannot crash
// itself on purpose whatever its flags or environment.
func TestOnlyTheChaosBuildLinksFaultInjection(t *testing.T) {
	deps := func(args ...string) []string {
		t.Helper()
		out, err := exec.Command("go", append(append([]string{"list"}, args...), "-deps", ".")...).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %v: %v\n%s", args, err, out)
		}
		return strings.Fields(string(out))
	}
	if slices.Contains(deps(), writerfaultPkg) {
		t.Errorf("the normal build of analytics links %s", writerfaultPkg)
	}
	if !slices.Contains(deps("-tags", "chaos"), writerfaultPkg) {
		t.Errorf("the chaos build of analytics does not link %s", writerfaultPkg)
	}
}

// requiredArgs are the flags every start needs.
var requiredArgs = []string{"-tls-cert", "c.pem", "-tls-key", "k.pem", "-tls-ca", "ca.pem", "-nats-user", "", "-privacy-key-file", "default.b64"}

// The writer's dedup window is at least a day (a client's retries are dropped that long) and the
// filter's capacity bounded; the defaults are 48 h and 50 million events.
func TestDedupFlags(t *testing.T) {
	s, err := parse(requiredArgs)
	if err != nil {
		t.Fatal(err)
	}
	if w := s.cfg.Writer; w.DedupWindow != 48*time.Hour || w.DedupCapacity != 50_000_000 {
		t.Errorf("defaults: window %s, capacity %d; want 48h and 50000000", w.DedupWindow, w.DedupCapacity)
	}
	s, err = parse(append([]string{"-dedup-window", "72h", "-dedup-capacity", "1000000"}, requiredArgs...))
	if err != nil {
		t.Fatal(err)
	}
	if w := s.cfg.Writer; w.DedupWindow != 72*time.Hour || w.DedupCapacity != 1_000_000 {
		t.Errorf("set: window %s, capacity %d; want 72h and 1000000", w.DedupWindow, w.DedupCapacity)
	}
	for _, args := range [][]string{{"-dedup-window", "23h"}, {"-dedup-window", "721h"}, {"-dedup-capacity", "999"}, {"-dedup-capacity", "4000000001"}} {
		if _, err := parse(append(args, requiredArgs...)); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("parse %v: err = %v, want it refused naming %s", args, err, args[0])
		}
	}
}

// The shards default to the one -clickhouse-addr, the writer to 0 of 1 and the roles to both;
// -clickhouse-shards names the first shard's address -clickhouse-addr unless that is set too.
func TestShardWriterAndRoleFlags(t *testing.T) {
	s, err := parse(requiredArgs)
	if err != nil {
		t.Fatal(err)
	}
	c := s.cfg
	if !slices.Equal(c.Shards(), []string{c.ClickHouseAddr}) || c.WriterIndex != 0 || c.WriterCount != 1 || c.Roles != app.AllRoles {
		t.Errorf("defaults: shards %v, writer %d of %d, roles %v; want [%s], 0 of 1, api,writer", c.Shards(), c.WriterIndex, c.WriterCount, c.Roles, c.ClickHouseAddr)
	}
	s, err = parse(append([]string{"-clickhouse-shards", "ch1:9000, ch2:9000", "-writer-index", "1", "-writer-count", "2", "-roles", "writer"}, requiredArgs...))
	if err != nil {
		t.Fatal(err)
	}
	c = s.cfg
	if !slices.Equal(c.Shards(), []string{"ch1:9000", "ch2:9000"}) || c.ClickHouseAddr != "ch1:9000" || c.WriterIndex != 1 || c.WriterCount != 2 || c.Roles != (app.Roles{Writer: true}) {
		t.Errorf("set: shards %v (addr %s), writer %d of %d, roles %v; want [ch1:9000 ch2:9000] (ch1:9000), 1 of 2, writer", c.Shards(), c.ClickHouseAddr, c.WriterIndex, c.WriterCount, c.Roles)
	}
	if s, err = parse(append([]string{"-roles", "writer,api", "-clickhouse-addr", "ch1:9000", "-clickhouse-shards", "ch1:9000,ch2:9000"}, requiredArgs...)); err != nil || s.cfg.Roles != app.AllRoles {
		t.Errorf("-roles writer,api with -clickhouse-addr the first shard: roles %v, err %v", s.cfg.Roles, err)
	}
	t.Run("env", func(t *testing.T) {
		t.Setenv("CM_ANALYTICS_CLICKHOUSE_ADDR", "elsewhere:9000")
		if _, err := parse(append([]string{"-clickhouse-shards", "ch1:9000,ch2:9000"}, requiredArgs...)); err == nil || !strings.Contains(err.Error(), "-clickhouse-addr") {
			t.Errorf("CM_ANALYTICS_CLICKHOUSE_ADDR not the first shard: err = %v, want it refused naming -clickhouse-addr", err)
		}
	})

	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"-clickhouse-shards", "ch1:9000,,ch2:9000"}, "-clickhouse-shards"},
		{[]string{"-clickhouse-shards", "ch1:9000,ch2:9000,ch1:9000"}, "-clickhouse-shards"},
		{[]string{"-clickhouse-shards", "a:1,b:1,c:1,d:1,e:1,f:1,g:1,h:1,i:1"}, "-clickhouse-shards"},
		{[]string{"-clickhouse-addr", "other:9000", "-clickhouse-shards", "ch1:9000,ch2:9000"}, "-clickhouse-addr"},
		{[]string{"-writer-count", "0"}, "-writer-count"},
		{[]string{"-writer-count", "9"}, "-writer-count"},
		{[]string{"-writer-index", "-1"}, "-writer-index"},
		{[]string{"-writer-index", "2", "-writer-count", "2"}, "-writer-index"},
		{[]string{"-writer-index", "1"}, "-writer-index"},
		{[]string{"-roles", ""}, "-roles"},
		{[]string{"-roles", "api,reports"}, "-roles"},
		{[]string{"-roles", "writer,writer"}, "-roles"},
	} {
		if _, err := parse(append(tc.args, requiredArgs...)); err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("parse %q: err = %v, want it refused naming %s", tc.args, err, tc.flag)
		}
	}
}

// Retention defaults to keeping raw events (tenants' policies still apply), hourly; the privacy
// key file comes from its flag or CM_ANALYTICS_PRIVACY_KEY_FILE.
func TestPrivacyAndRetentionFlags(t *testing.T) {
	s, err := parse(requiredArgs)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.cfg; c.RetentionDays != 0 || c.RetentionInterval != time.Hour {
		t.Errorf("defaults: retention %d days every %s; want 0, 1h", c.RetentionDays, c.RetentionInterval)
	}
	// The writer cannot recognise suppressed subjects without the key: it is required with the
	// writer role, not with the API alone.
	noKey := requiredArgs[:len(requiredArgs)-2]
	if _, err := parse(noKey); err == nil || !strings.Contains(err.Error(), "-privacy-key-file") {
		t.Errorf("a writer without -privacy-key-file: err = %v, want it refused", err)
	}
	if _, err := parse(append([]string{"-roles", "api"}, noKey...)); err != nil {
		t.Errorf("the API alone without -privacy-key-file: %v", err)
	}
	s, err = parse(append(append([]string{"-retention-days", "395", "-retention-interval", "30m"}, requiredArgs...), "-privacy-key-file", "k.b64"))
	if err != nil {
		t.Fatal(err)
	}
	if c := s.cfg; c.RetentionDays != 395 || c.RetentionInterval != 30*time.Minute || c.PrivacyKeyFile != "k.b64" {
		t.Errorf("set: retention %d days every %s, key file %q; want 395, 30m, k.b64", c.RetentionDays, c.RetentionInterval, c.PrivacyKeyFile)
	}
	t.Run("env", func(t *testing.T) {
		t.Setenv("CM_ANALYTICS_PRIVACY_KEY_FILE", "/run/secrets/privacy-key")
		t.Setenv("CM_ANALYTICS_RETENTION_DAYS", "30")
		s, err := parse(requiredArgs[:len(requiredArgs)-2])
		if err != nil || s.cfg.PrivacyKeyFile != "/run/secrets/privacy-key" || s.cfg.RetentionDays != 30 {
			t.Errorf("from the environment: key file %q, retention %d, err %v", s.cfg.PrivacyKeyFile, s.cfg.RetentionDays, err)
		}
	})
	for _, args := range [][]string{{"-retention-days", "-1"}, {"-retention-interval", "59s"}, {"-retention-interval", "13h"}} {
		if _, err := parse(append(args, requiredArgs...)); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("parse %v: err = %v, want it refused naming %s", args, err, args[0])
		}
	}
}

// Erasures are gathered for 2 s by default and wait a minute for the writers' fence
// acknowledgements; both are flags and environment variables, bounded (the fence timeout by
// the age at which writers ignore a fence).
func TestErasureFlags(t *testing.T) {
	s, err := parse(requiredArgs)
	if err != nil {
		t.Fatal(err)
	}
	if e := s.cfg.Erasure; e.Window != 2*time.Second || e.FenceTimeout != time.Minute {
		t.Errorf("defaults: window %s, fence timeout %s; want 2s and 1m", e.Window, e.FenceTimeout)
	}
	t.Setenv("CM_ANALYTICS_ERASURE_WINDOW", "500ms")
	s, err = parse(append([]string{"-erasure-fence-timeout", "30s"}, requiredArgs...))
	if err != nil {
		t.Fatal(err)
	}
	if e := s.cfg.Erasure; e.Window != 500*time.Millisecond || e.FenceTimeout != 30*time.Second {
		t.Errorf("set: window %s, fence timeout %s; want 500ms and 30s", e.Window, e.FenceTimeout)
	}
	for _, args := range [][]string{{"-erasure-window", "5ms"}, {"-erasure-window", "6m"}, {"-erasure-fence-timeout", "500ms"}, {"-erasure-fence-timeout", "4m"}} {
		if _, err := parse(append(args, requiredArgs...)); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("parse %v: err = %v, want it refused naming %s", args, err, args[0])
		}
	}
}

// The probes' health-only port is off unless set (flag or CM_ANALYTICS_HEALTH_LISTEN); connections age out after
// the default maximum unless set; a negative age is refused.
func TestHealthAndConnectionAgeFlags(t *testing.T) {
	base := requiredArgs
	s, err := parse(base)
	if err != nil || s.cfg.HealthListen != "" || s.cfg.ConnectionAge != grpcserver.DefaultConnectionAge {
		t.Fatalf("defaults: health %q, age %+v, %v; want none, %+v", s.cfg.HealthListen, s.cfg.ConnectionAge, err, grpcserver.DefaultConnectionAge)
	}
	t.Setenv("CM_ANALYTICS_HEALTH_LISTEN", ":8081")
	s, err = parse(append([]string{"-max-connection-age", "1m", "-max-connection-age-grace", "30s"}, base...))
	if want := (grpcserver.ConnectionAge{Max: time.Minute, Grace: 30 * time.Second}); err != nil || s.cfg.HealthListen != ":8081" || s.cfg.ConnectionAge != want {
		t.Errorf("set: health %q, age %+v, %v; want :8081, %+v", s.cfg.HealthListen, s.cfg.ConnectionAge, err, want)
	}
	if _, err := parse(append([]string{"-max-connection-age", "-1s"}, base...)); err == nil || !strings.Contains(err.Error(), "-max-connection-age") {
		t.Errorf("a negative age: %v, want it refused", err)
	}
}
