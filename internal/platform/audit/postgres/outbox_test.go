package postgres_test

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit/auditpb"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
)

// authLog stands for auth's AppendAuditRecords: it keeps each record id once.
type authLog struct {
	mu  sync.Mutex
	ids []string
}

func (a *authLog) AppendAuditRecords(_ context.Context, in *authv1.AppendAuditRecordsRequest, _ ...grpc.CallOption) (*authv1.AppendAuditRecordsResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	resp := &authv1.AppendAuditRecordsResponse{}
	for _, r := range in.GetRecords() {
		if slices.Contains(a.ids, r.GetId()) {
			resp.Duplicates++
			continue
		}
		a.ids = append(a.ids, r.GetId())
		resp.Appended++
	}
	return resp, nil
}

func (a *authLog) held() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Sorted(slices.Values(a.ids))
}

func record(method string) audit.Record {
	return audit.Record{ID: audit.NewID(), Time: time.Now().UTC(), Method: method, ActorKind: "anonymous",
		Outcome: codes.PermissionDenied, Service: "campaigns"}
}

// The outbox table as services created it at start before its schema was versioned.
const unversionedOutbox = `CREATE TABLE IF NOT EXISTS audit_outbox (
    id          uuid PRIMARY KEY,
    record      bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS audit_outbox_age ON audit_outbox (create_time);`

// A database from before the outbox's migrations (table made at start, records waiting in it)
// migrates in place: version 1 adopts the table, and the waiting records are then delivered.
func TestMigrationAdoptsAnExistingOutbox(t *testing.T) {
	ctx := context.Background()
	pool, err := pgdb.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, unversionedOutbox); err != nil {
		t.Fatal(err)
	}
	var waiting []string
	for range 3 {
		r := record("/campaignmesh.campaigns.v1.CampaignService/DeleteCampaign")
		data, err := proto.Marshal(auditpb.ToProto(r))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `INSERT INTO audit_outbox (id, record) VALUES ($1, $2)`, r.ID, data); err != nil {
			t.Fatal(err)
		}
		waiting = append(waiting, r.ID)
	}

	auth := &authLog{}
	outbox, err := auditpg.NewOutbox(ctx, pool, auth, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("migrate a populated unversioned outbox: %v", err)
	}
	if err := auditpg.Migrate(ctx, pool); err != nil { // a second start
		t.Fatalf("migrate again: %v", err)
	}
	var version int64
	if err := pool.QueryRow(ctx, `SELECT max(version_id) FROM goose_audit_outbox_version WHERE is_applied`).Scan(&version); err != nil || version != 1 {
		t.Fatalf("outbox schema version = %d (%v), want 1", version, err)
	}
	if n, err := outbox.Pending(ctx); err != nil || n != 3 {
		t.Fatalf("%d records waiting after the migration (%v), want the 3 from before", n, err)
	}
	if n, err := outbox.Flush(ctx); err != nil || n != 3 {
		t.Fatalf("flush delivered %d (%v), want 3", n, err)
	}
	if got := auth.held(); !slices.Equal(got, slices.Sorted(slices.Values(waiting))) {
		t.Fatalf("auth holds %v, want %v", got, waiting)
	}
}

// InsertTx writes a record with the change it audits: a rolled-back change leaves no record.
func TestInsertTxCommitsWithTheChange(t *testing.T) {
	ctx := context.Background()
	pool, err := pgdb.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := auditpg.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	outbox, err := auditpg.NewOutbox(ctx, pool, &authLog{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, commit := range []bool{false, true} {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := auditpg.InsertTx(ctx, tx, record("/campaignmesh.campaigns.v1.CampaignService/CreateCampaign")); err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n, err := outbox.Pending(ctx); err != nil || n != 1 {
		t.Fatalf("%d records pending (%v), want only the committed one", n, err)
	}
}
