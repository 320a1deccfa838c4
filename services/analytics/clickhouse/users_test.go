package clickhouse_test

import (
	"context"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

// The query API's user reads but cannot write or drop, and nobody gets in without a password
// (the dev server's users from scripts/devenv.sh; compose creates the same with GRANTs).
func TestClickHouseUsersHaveOnlyTheirRights(t *testing.T) {
	chtest.RequireRoleUsers(t)
	ctx := context.Background()
	writer := open(t, dataset, 1)
	var db string
	if err := writer.QueryRow(ctx, `SELECT currentDatabase()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	reader, err := clickhouse.OpenReader(ctx, chtest.Addr(), db, clickhouse.User(chtest.Reader(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()

	svc := analytics.NewService(clickhouse.NewQueries(reader, writer, clickhouse.DefaultQueryLimits), analytics.DefaultLimits)
	if _, err := svc.Summary(ctx, "t1", analytics.SummaryRequest{CampaignIDs: []string{"c1"},
		Start: ts("2026-03-28T00:00:00Z"), End: ts("2026-03-31T00:00:00Z")}); err != nil {
		t.Fatalf("a query through the reader: %v", err)
	}
	for _, q := range []string{
		`INSERT INTO events (tenant_id, event_id, stream_seq) VALUES ('t1', 'forged', 1)`,
		`ALTER TABLE events DELETE WHERE 1`,
		`DROP TABLE events`,
		`CREATE TABLE x (a UInt8) ENGINE = Memory`,
		`SET readonly = 0`,
	} {
		if err := reader.Exec(ctx, q); err == nil {
			t.Errorf("the reader ran %q", q)
		}
	}
	var n uint64
	if err := writer.QueryRow(ctx, `SELECT count() FROM events WHERE event_id = 'forged'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("forged rows = %d (%v), want 0", n, err)
	}

	for _, u := range []clickhouse.User{{Name: "default"}, {Name: chtest.Writer(t).Name}, {Name: chtest.Reader(t).Name}, {Name: "default", Password: "wrong"}} {
		conn, err := ch.Open(&ch.Options{Addr: []string{chtest.Addr()}, Auth: ch.Auth{Username: u.Name, Password: u.Password}, DialTimeout: 5 * time.Second})
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close()
		}
		if err == nil {
			t.Errorf("user %q connected with password %q", u.Name, u.Password)
		}
	}
}
