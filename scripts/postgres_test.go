package scripts

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/campaignmesh/campaignmesh/internal/platform/devstate"
)

// Each service's PostgreSQL role (scripts/devenv.sh) reaches its own database and no other, and
// the admin role of tests and tools reaches none of the services' databases.
func TestPostgresRolesReachOnlyTheirOwnDatabase(t *testing.T) {
	secrets, addr := devstate.Getenv("CM_SECRETS_DIR"), devstate.Getenv("CM_POSTGRES_ADDR")
	if secrets == "" || addr == "" {
		t.Skip("CM_SECRETS_DIR and CM_POSTGRES_ADDR are not set: run make test (it sources .state/env)")
	}
	connect := func(role, file, db string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable&passfile=%s", role, addr, db, filepath.Join(secrets, file)))
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		return conn.Ping(ctx)
	}
	dbs := devenvDatabases(t)
	for _, role := range dbs {
		if _, err := os.Stat(filepath.Join(secrets, "pgpass-"+role)); err != nil {
			t.Errorf("database %s: %v (a .state older than scripts/devenv.sh's DBS: run scripts/devenv.sh up, as make test does)", role, err)
			continue
		}
		for _, db := range dbs {
			err := connect(role, "pgpass-"+role, db)
			if db == role && err != nil {
				t.Errorf("role %s cannot reach its database: %v", role, err)
			}
			if db != role && err == nil {
				t.Errorf("role %s reaches the %s database", role, db)
			}
		}
		if err := connect("campaignmesh", "pgpass-admin", role); err == nil {
			t.Errorf("the tests' admin role reaches the %s database", role)
		}
		if err := connect(role, "pgpass-campaigns-missing", role); err == nil {
			t.Errorf("role %s logs in without its password", role)
		}
	}
}

var (
	devenvDBs     = regexp.MustCompile(`(?m)^DBS=\(([^)]*)\)`)
	initDBs       = regexp.MustCompile(`(?m)^for db in ([^;]*); do`)
	composeRoles  = regexp.MustCompile(`(?m)^for r in ([^;]*); do`)
	composeSecret = regexp.MustCompile(`(?m)^\s*file: \./secrets/postgres-(\S+)$`)
)

// devenvDatabases are the services' databases scripts/devenv.sh creates (its DBS), one role each.
func devenvDatabases(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("devenv.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := devenvDBs.FindSubmatch(b)
	if m == nil {
		t.Fatal("devenv.sh: no DBS=(…) line")
	}
	return strings.Fields(string(m[1]))
}

// The compose stack and the dev overlay (deploy/postgres-init.sh and its copy, checked equal by
// deploy/k8stest) create the databases devenv.sh creates, and compose-secrets.sh and compose.yaml
// give each its role's password and pgpass file: a service added to one is added to all.
func TestEveryPostgresSetupCreatesTheSameDatabases(t *testing.T) {
	want := devenvDatabases(t)
	slices.Sort(want)
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	fields := func(name string, re *regexp.Regexp, text string) {
		m := re.FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("%s: no line matching %s", name, re)
		}
		got := strings.Fields(m[1])
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s creates %v, devenv.sh %v", name, got, want)
		}
	}
	fields("deploy/postgres-init.sh", initDBs, read("../deploy/postgres-init.sh"))
	fields("scripts/compose-secrets.sh (pgpass files)", composeRoles, read("compose-secrets.sh"))
	compose := read("../deploy/compose.yaml")
	var secrets []string
	for _, m := range composeSecret.FindAllStringSubmatch(compose, -1) {
		if m[1] != "admin" {
			secrets = append(secrets, m[1])
		}
	}
	slices.Sort(secrets)
	if !slices.Equal(secrets, want) {
		t.Errorf("deploy/compose.yaml has the role passwords postgres-%v, devenv.sh the databases %v", secrets, want)
	}
	for _, db := range want {
		if !strings.Contains(compose, "file: ./secrets/pgpass-"+db+"\n") {
			t.Errorf("deploy/compose.yaml has no secret pgpass-%s", db)
		}
	}
}
