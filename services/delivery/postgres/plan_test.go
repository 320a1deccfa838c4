package postgres

import (
	"context"
	"strings"
	"testing"

	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
)

// The upsert is prepared once per connection and may run on a generic plan made while the
// tenant had few contacts. That plan must find contacts through the unique identifier indexes
// (and the primary key), never by scanning the tenant's contacts: such a plan makes a large
// import quadratic, since the rows a transaction inserts are invisible to autoanalyze.
func TestUpsertGenericPlanUsesUniqueIndexes(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	for _, sql := range []string{
		`INSERT INTO contacts (tenant_id, email) VALUES ('t1', 'a@b.io')`,
		`SET plan_cache_mode = force_generic_plan`,
		`PREPARE upsert(text, text, text, text, text, text, text, text, timestamptz, text, text, timestamptz, int, text) AS ` + upsertSQL,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%.60s: %v", sql, err)
		}
	}
	rows, err := conn.Query(ctx, `EXPLAIN EXECUTE upsert('u', 'e@x.io', '+14155550100', '{}', '', '', '', '', NULL, '', '', NULL, 50, 't1')`)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	for _, bad := range []string{"Seq Scan on contacts", "using contacts_tenant_id ", "using contacts_tenant_create"} {
		if strings.Contains(text, bad) {
			t.Errorf("generic plan has %q:\n%s", bad, text)
		}
	}
	for _, idx := range []string{"contacts_tenant_email", "contacts_tenant_phone", "contacts_tenant_user_id", "contacts_pkey"} {
		if !strings.Contains(text, idx) {
			t.Errorf("generic plan does not use %s:\n%s", idx, text)
		}
	}
}
