package scripts

import (
	"context"
	"fmt"
	"path/filepath"
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
	dbs := []string{"auth", "campaigns", "dsr"}
	for _, role := range dbs {
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
