// Package scripts holds tests of the dev scripts and the compose file: each service is given
// only its own settings (issue 10, least knowledge).
package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var services = []string{"auth", "ingest", "analytics", "campaigns", "delivery", "dsr", "billing", "gateway"}

// composeServices are the services deploy/compose.yaml runs: every one.
var composeServices = services

// secrets maps each file of .state/secrets to the one service that may know it ("" : none,
// the admin credentials are for devenv and tests).
var secrets = map[string]string{
	"auth-kek": "auth", "nats-ingest": "ingest", "nats-analytics": "analytics", "nats-gateway": "gateway",
	"clickhouse-writer": "analytics", "clickhouse-reader": "analytics",
	"pgpass-auth": "auth", "postgres-auth": "auth", "pgpass-campaigns": "campaigns", "postgres-campaigns": "campaigns",
	"pgpass-dsr": "dsr", "postgres-dsr": "dsr", "dsr-kek": "dsr", "nats-dsr": "dsr",
	"pgpass-delivery": "delivery", "postgres-delivery": "delivery", "nats-delivery": "delivery",
	// The providers' credentials and the tracking key: delivery's (the dev stand-ins get the
	// provider files as flags, not through run.sh env).
	"sendgrid-api-key": "delivery", "sendgrid-webhook-public-key": "delivery", "twilio-auth-token": "delivery", "tracking-key": "delivery",
	"pgpass-billing": "billing", "postgres-billing": "billing", "nats-billing": "billing",
	// The Stripe credentials: billing's (the dev stand-in gets them as flags).
	"stripe-api-key": "billing", "stripe-webhook-secret": "billing",
	"nats-admin": "", "clickhouse-default": "", "clickhouse-client.xml": "", "pgpass-admin": "", "postgres-admin": "",
}

// sharedSecrets are the files several services know: the privacy key keys the subject hashes
// that dsr writes and ingest, analytics and delivery match.
var sharedSecrets = map[string][]string{"privacy-key": {"dsr", "ingest", "analytics", "delivery"}}

func prefix(svc string) string { return "CM_" + strings.ToUpper(svc) + "_" }

// For every service, `scripts/run.sh env SVC` (the environment it is started with) holds no
// variable of another service and no path to another service's secrets or database.
func TestRunShGivesEachServiceOnlyItsOwnSettings(t *testing.T) {
	state := t.TempDir()
	env := strings.Join([]string{
		"CM_POSTGRES_URL=postgres://campaignmesh@127.0.0.1:15432/postgres?passfile=" + filepath.Join(state, "secrets", "pgpass-admin"),
		"CM_POSTGRES_ADDR=127.0.0.1:15432",
		"CM_CLICKHOUSE_ADDR=127.0.0.1:19000", "CM_NATS_URL=nats://127.0.0.1:14222",
		"CM_SECRETS_DIR=" + filepath.Join(state, "secrets"),
		"CM_CLICKHOUSE_USER=default", "CM_CLICKHOUSE_PASSWORD_FILE=" + filepath.Join(state, "secrets", "clickhouse-default"),
		"CM_CLICKHOUSE_WRITER_USER=analytics_writer", "CM_CLICKHOUSE_READER_USER=analytics_reader",
	}, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(state, "env"), []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, svc := range services {
		t.Run(svc, func(t *testing.T) {
			cmd := exec.Command("bash", "run.sh", "env", svc)
			// A caller's environment full of every service's settings (as the old run.sh built).
			cmd.Env = append(os.Environ(), "CM_RUN_STATE="+state, "CM_INGEST_LOG_LEVEL=debug", "CM_AUTH_POSTGRES_URL=postgres://x:secret@h/auth",
				"CM_ANALYTICS_CLICKHOUSE_READER_PASSWORD_FILE=/elsewhere/clickhouse-reader", "CM_CAMPAIGNS_ANALYTICS_ADDR=h:1", "CM_GATEWAY_RATE_LIMIT=5")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("run.sh env %s: %v\n%s", svc, err, out)
			}
			own := 0
			for file, owners := range sharedSecrets {
				if slices.Contains(owners, svc) && !strings.Contains(string(out), "/"+file+"\n") {
					t.Errorf("%s is not given %s", svc, file)
				}
			}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				key, value, ok := strings.Cut(line, "=")
				if !ok {
					t.Fatalf("line %q is not KEY=VALUE", line)
				}
				if strings.HasPrefix(key, prefix(svc)) {
					own++
				} else if strings.HasPrefix(key, "CM_") {
					t.Errorf("%s gets %s, not its setting", svc, key)
				}
				if strings.Contains(value, "secret@") {
					t.Errorf("%s: a password is printed in %s", svc, key)
				}
				for file, owner := range secrets {
					if owner != svc && strings.Contains(value, "/"+file) {
						t.Errorf("%s gets %s (%s), another's secret", svc, key, value)
					}
				}
				for file, owners := range sharedSecrets {
					if !slices.Contains(owners, svc) && strings.Contains(value, "/"+file) {
						t.Errorf("%s gets %s (%s), a secret of %v only", svc, key, value, owners)
					}
				}
				for _, other := range services {
					if other != svc && strings.Contains(value, "/"+other+"?") || other != svc && strings.Contains(value, "/"+other+".pem") {
						t.Errorf("%s gets %s=%s, %s's resource", svc, key, value, other)
					}
				}
			}
			if own < 3 {
				t.Errorf("%s gets %d settings of its own, want its TLS files at least:\n%s", svc, own, out)
			}
		})
	}
}

// In deploy/compose.yaml each mesh service's environment holds only its own CM_<SERVICE>_ keys,
// and only the services that need a secret mount it.
func TestComposeGivesEachServiceOnlyItsOwnSettings(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "deploy", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Environment map[string]any `yaml:"environment"`
			Secrets     []string       `yaml:"secrets"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatal(err)
	}
	wantSecrets := map[string][]string{"ingest": {"nats-ingest", "privacy-key"}, "analytics": {"nats-analytics", "clickhouse-writer", "clickhouse-reader", "privacy-key"},
		"auth": {"pgpass-auth", "auth-kek"}, "campaigns": {"pgpass-campaigns"}, "dsr": {"pgpass-dsr", "dsr-kek", "nats-dsr", "privacy-key"},
		"gateway": {"nats-gateway"}, "delivery": {"pgpass-delivery", "nats-delivery", "privacy-key", "sendgrid-api-key", "twilio-auth-token", "tracking-key"},
		"billing": {"pgpass-billing", "nats-billing", "stripe-api-key", "stripe-webhook-secret"}}
	for _, svc := range composeServices {
		s, ok := compose.Services[svc]
		if !ok {
			t.Fatalf("compose has no service %s", svc)
		}
		if len(s.Environment) == 0 {
			t.Errorf("%s has no environment", svc)
		}
		for key := range s.Environment {
			if strings.HasPrefix(key, "CM_") && !strings.HasPrefix(key, prefix(svc)) {
				t.Errorf("compose gives %s the variable %s", svc, key)
			}
		}
		if got, want := strings.Join(s.Secrets, ","), strings.Join(wantSecrets[svc], ","); got != want {
			t.Errorf("compose gives %s the secrets [%s], want [%s]", svc, got, want)
		}
	}
}

// With two ClickHouse shards in .state/env, analytics runs writer 0 of 2 over both shards and
// analytics-writer-1 runs writer 1 of 2 alone on its own admin port, whatever the caller's
// settings of the role, index or admin address; with one shard analytics is writer 0 of 1.
func TestRunShStartsAWriterPerShard(t *testing.T) {
	runEnv := func(t *testing.T, shards, svc string) map[string]string {
		t.Helper()
		state := t.TempDir()
		env := "CM_CLICKHOUSE_ADDR=127.0.0.1:19000\nCM_SECRETS_DIR=" + filepath.Join(state, "secrets") + "\n"
		if shards != "" {
			env += "CM_CLICKHOUSE_SHARDS=" + shards + "\n"
		}
		if err := os.WriteFile(filepath.Join(state, "env"), []byte(env), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("bash", "run.sh", "env", svc)
		cmd.Env = append(os.Environ(), "CM_RUN_STATE="+state, "CM_ANALYTICS_ROLES=api", "CM_ANALYTICS_WRITER_INDEX=5", "CM_ANALYTICS_ADMIN_LISTEN=127.0.0.1:1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("run.sh env %s: %v\n%s", svc, err, out)
		}
		vars := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			key, value, _ := strings.Cut(line, "=")
			if _, dup := vars[key]; dup {
				t.Errorf("%s is set twice", key)
			}
			vars[key] = value
		}
		return vars
	}
	expect := func(t *testing.T, vars map[string]string, want map[string]string) {
		t.Helper()
		for k, v := range want {
			if vars[k] != v {
				t.Errorf("%s=%q, want %q", k, vars[k], v)
			}
		}
	}
	two := "127.0.0.1:19000,127.0.0.1:19001"
	expect(t, runEnv(t, "", "analytics"), map[string]string{"CM_ANALYTICS_CLICKHOUSE_SHARDS": "127.0.0.1:19000", "CM_ANALYTICS_WRITER_COUNT": "1"})
	expect(t, runEnv(t, two, "analytics"), map[string]string{"CM_ANALYTICS_CLICKHOUSE_SHARDS": two, "CM_ANALYTICS_WRITER_COUNT": "2",
		"CM_ANALYTICS_CLICKHOUSE_ADDR": "127.0.0.1:19000", "CM_ANALYTICS_ROLES": "api"}) // the caller's setting, as for every service
	writer := runEnv(t, two, "analytics-writer-1")
	expect(t, writer, map[string]string{"CM_ANALYTICS_CLICKHOUSE_SHARDS": two, "CM_ANALYTICS_WRITER_COUNT": "2",
		"CM_ANALYTICS_ROLES": "writer", "CM_ANALYTICS_WRITER_INDEX": "1", "CM_ANALYTICS_ADMIN_LISTEN": "127.0.0.1:9114"})
	if !strings.HasSuffix(writer["CM_ANALYTICS_TLS_CERT"], "/certs/analytics.pem") {
		t.Errorf("analytics-writer-1's certificate is %s, want analytics'", writer["CM_ANALYTICS_TLS_CERT"])
	}
}
