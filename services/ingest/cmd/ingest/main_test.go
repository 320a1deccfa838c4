package main

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/ingest"
	"github.com/campaignmesh/campaignmesh/services/ingest/app"
)

var tlsArgs = []string{"-tls-cert", "c", "-tls-key", "k", "-tls-ca", "ca", "-nats-password-file", "pw", "-privacy-key-file", "pk"}

// The documented defaults: what ingest runs with when only the required flags are given.
func TestParseDefaults(t *testing.T) {
	s, err := parse(tlsArgs)
	if err != nil {
		t.Fatal(err)
	}
	want := app.Config{
		Listen: "127.0.0.1:7102", AdminListen: "127.0.0.1:9102", AuthAddr: "127.0.0.1:7101",
		TLS:            mtls.Files{Cert: "c", Key: "k", CA: "ca"},
		NATS:           natsjs.ClientFlags{URL: "nats://127.0.0.1:14222", User: "ingest", PasswordFile: "pw"},
		Stream:         natsjs.DefaultStream,
		Limits:         ingest.DefaultLimits,
		Rates:          ingest.RateLimits{PerTenant: 200000, PerSource: 100000},
		Tails:          ingest.TailLimits{PerSecond: 100, MaxDuration: 30 * time.Minute, PerTenant: 5, History: 100, HistoryAge: 10 * time.Minute, HistoryBytes: 4 << 20, HistoryWait: 250 * time.Millisecond},
		GracePeriod:    grpcserver.DefaultGracePeriod,
		ConnectionAge:  grpcserver.DefaultConnectionAge,
		PrivacyKeyFile: "pk", PrivacyLoadTimeout: 30 * time.Second,
	}
	if diff := cmp.Diff(want, s.cfg); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if s.logLevel != slog.LevelInfo {
		t.Errorf("log level %v", s.logLevel)
	}
}

// Every flag (and so every CM_INGEST_* variable, named after it) sets its field.
func TestParseFlags(t *testing.T) {
	args := append([]string{
		"-listen", ":1", "-admin-listen", ":2", "-auth-addr", "auth:3",
		"-nats-url", "nats://n:4", "-nats-user", "u", "-nats-ca", "nca",
		"-max-event-bytes", "1000", "-max-batch-bytes", "2000", "-max-batch-events", "5", "-max-properties", "6",
		"-skew-tolerance", "7s", "-max-future", "8s", "-rate-per-tenant", "9", "-rate-per-source", "10",
		"-stream-max-bytes", "2000000", "-stream-duplicate-window", "11s", "-grace-period", "12s", "-log-level", "debug",
		"-tail-rate", "13", "-tail-max-duration", "14s", "-tail-per-tenant", "15",
		"-tail-history", "16", "-tail-history-age", "17s", "-tail-history-bytes", "18", "-tail-history-wait", "19s",
		"-health-listen", ":20", "-max-connection-age", "21s", "-max-connection-age-grace", "22s",
	}, tlsArgs...)
	s, err := parse(args)
	if err != nil {
		t.Fatal(err)
	}
	want := app.DefaultConfig()
	want.Listen, want.AdminListen, want.AuthAddr = ":1", ":2", "auth:3"
	want.TLS = mtls.Files{Cert: "c", Key: "k", CA: "ca"}
	want.PrivacyKeyFile = "pk"
	want.NATS = natsjs.ClientFlags{URL: "nats://n:4", User: "u", PasswordFile: "pw", CA: "nca"}
	want.Limits.MaxEventBytes, want.Limits.MaxBatchBytes, want.Limits.MaxBatchEvents, want.Limits.MaxProperties = 1000, 2000, 5, 6
	want.Limits.SkewTolerance, want.Limits.MaxFuture = 7*time.Second, 8*time.Second
	want.Rates = ingest.RateLimits{PerTenant: 9, PerSource: 10}
	want.Stream.MaxBytes, want.Stream.Duplicates = 2000000, 11*time.Second
	want.GracePeriod = 12 * time.Second
	want.HealthListen, want.ConnectionAge = ":20", grpcserver.ConnectionAge{Max: 21 * time.Second, Grace: 22 * time.Second}
	want.Tails = ingest.TailLimits{PerSecond: 13, MaxDuration: 14 * time.Second, PerTenant: 15,
		History: 16, HistoryAge: 17 * time.Second, HistoryBytes: 18, HistoryWait: 19 * time.Second}
	if diff := cmp.Diff(want, s.cfg); diff != "" {
		t.Errorf("flags (-want +got):\n%s", diff)
	}
	if s.logLevel != slog.LevelDebug {
		t.Errorf("log level %v", s.logLevel)
	}
	t.Setenv("CM_INGEST_RATE_PER_TENANT", "42")
	if s, err := parse(tlsArgs); err != nil || s.cfg.Rates.PerTenant != 42 {
		t.Errorf("CM_INGEST_RATE_PER_TENANT: %v, %v", s.cfg.Rates, err)
	}
}

// The privacy key is required: without it suppression lists cannot be matched.
func TestParseRequiresThePrivacyKey(t *testing.T) {
	if _, err := parse(tlsArgs[:len(tlsArgs)-2]); err == nil || !strings.Contains(err.Error(), "-privacy-key-file") {
		t.Fatalf("parse without -privacy-key-file: %v", err)
	}
	t.Setenv("CM_INGEST_PRIVACY_KEY_FILE", "/run/secrets/privacy-key")
	if s, err := parse(tlsArgs[:len(tlsArgs)-2]); err != nil || s.cfg.PrivacyKeyFile != "/run/secrets/privacy-key" {
		t.Fatalf("CM_INGEST_PRIVACY_KEY_FILE: %q, %v", s.cfg.PrivacyKeyFile, err)
	}
}

// The live event debugger's bounds must be positive: a zero rate or duration would make every
// tail useless, a zero per-tenant count refuse them all.
func TestParseRequiresPositiveTailBounds(t *testing.T) {
	for _, flag := range []string{"-tail-rate", "-tail-max-duration", "-tail-per-tenant"} {
		if _, err := parse(append([]string{flag, "0"}, tlsArgs...)); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%s 0: %v", flag, err)
		}
	}
}
