// Package postgres is the audit outbox of a service with a PostgreSQL database: a record is
// first stored in the service's own database — by a store in the transaction of the change it
// audits (InsertTx), or by the access layer through the Outbox sink — then delivered in batches
// to auth's AppendAuditRecords over mTLS and deleted once auth has it. Auth skips record ids it
// already holds, so a delivery retried after a crash or an outage stores each record exactly
// once. The outbox's table is versioned by its own goose migrations (Migrate).
package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit/auditpb"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// MigrationsName names the outbox's migrations and their version table (goose_audit_outbox_version).
const MigrationsName = "audit_outbox"

// Migrate creates or updates the outbox's table in the service's database. Stores that write
// records with InsertTx call it when they open; NewOutbox calls it too.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("audit outbox migrations: %w", err)
	}
	return pgdb.MigrateNamed(ctx, pool, MigrationsName, sub)
}

// Outbox is the audit sink of a service with a PostgreSQL database: durable first, delivered later.
type Outbox struct {
	pool   *pgxpool.Pool
	client auditpb.Appender
	logger *slog.Logger
	wake   chan struct{}
}

var (
	_ audit.Sink  = (*Outbox)(nil)
	_ audit.Waker = (*Outbox)(nil)
)

// NewOutbox returns an outbox in the service's database (migrating its table) that delivers to
// auth through client. Run must be running for records to leave.
func NewOutbox(ctx context.Context, pool *pgxpool.Pool, client auditpb.Appender, logger *slog.Logger) (*Outbox, error) {
	if err := Migrate(ctx, pool); err != nil {
		return nil, err
	}
	return &Outbox{pool: pool, client: client, logger: logger, wake: make(chan struct{}, 1)}, nil
}

// execer is a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func insert(ctx context.Context, db execer, r audit.Record) error {
	data, err := proto.Marshal(auditpb.ToProto(r))
	if err == nil {
		_, err = db.Exec(ctx, `INSERT INTO audit_outbox (id, record) VALUES ($1, $2)`, r.ID, data)
	}
	return err
}

// InsertTx stores r in tx: the record commits with the change it audits, or neither does. A
// store calls it with the record its domain took (audit.Take) and passed to it. The outbox
// table must exist (Migrate).
func InsertTx(ctx context.Context, tx pgx.Tx, r audit.Record) error {
	if err := insert(ctx, tx, r); err != nil {
		return fmt.Errorf("store audit record: %w", err)
	}
	return nil
}

// Wake implements audit.Waker: records were stored with InsertTx; deliver them soon.
func (o *Outbox) Wake() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Record implements audit.Sink: it stores the record durably before the call returns.
func (o *Outbox) Record(ctx context.Context, r audit.Record) error {
	if err := insert(ctx, o.pool, r); err != nil {
		return fmt.Errorf("store audit record in outbox: %w", err)
	}
	o.Wake()
	return nil
}

// Run delivers records until ctx ends, retrying with backoff (up to 30 s) while auth is
// unreachable.
func (o *Outbox) Run(ctx context.Context) error {
	backoff := time.Duration(0)
	for {
		n, err := o.Flush(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			backoff = min(max(2*backoff, 250*time.Millisecond), 30*time.Second)
			o.logger.WarnContext(ctx, "deliver audit records; will retry", "err", err, "retry_in", backoff.String())
		case n == auditpb.MaxBatch:
			backoff = 0
			continue // more waiting
		default:
			backoff = 0
		}
		wait := backoff
		if wait == 0 {
			wait = 5 * time.Second // also pick up records left by a previous run
		}
		select {
		case <-ctx.Done():
			return nil
		case <-o.wake:
			if backoff > 0 {
				select { // keep backing off while auth is down
				case <-ctx.Done():
					return nil
				case <-time.After(backoff):
				}
			}
		case <-time.After(wait):
		}
	}
}

// Flush delivers one batch of the oldest records and returns how many it delivered.
func (o *Outbox) Flush(ctx context.Context) (int, error) {
	rows, err := o.pool.Query(ctx, `SELECT id::text, record FROM audit_outbox ORDER BY create_time, id LIMIT $1`, auditpb.MaxBatch)
	if err != nil {
		return 0, fmt.Errorf("read audit outbox: %w", err)
	}
	type item struct {
		id   string
		data []byte
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (item, error) {
		var it item
		err := row.Scan(&it.id, &it.data)
		return it, err
	})
	if err != nil {
		return 0, fmt.Errorf("read audit outbox: %w", err)
	}
	if len(items) == 0 {
		return 0, nil
	}
	req := &authv1.AppendAuditRecordsRequest{}
	ids := make([]string, 0, len(items))
	for _, it := range items {
		rec := &authv1.AuditRecord{}
		if err := proto.Unmarshal(it.data, rec); err != nil {
			return 0, fmt.Errorf("decode audit outbox record %s: %w", it.id, err)
		}
		req.Records = append(req.Records, rec)
		ids = append(ids, it.id)
	}
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := o.client.AppendAuditRecords(callCtx, req); err != nil {
		return 0, fmt.Errorf("append audit records: %w", err)
	}
	// Auth has them now. A crash before this delete means redelivery, which auth skips.
	if _, err := o.pool.Exec(ctx, `DELETE FROM audit_outbox WHERE id = ANY($1::uuid[])`, ids); err != nil {
		return 0, fmt.Errorf("clear audit outbox: %w", err)
	}
	return len(items), nil
}

// Pending counts records not yet delivered.
func (o *Outbox) Pending(ctx context.Context) (int, error) {
	var n int
	if err := o.pool.QueryRow(ctx, `SELECT count(*) FROM audit_outbox`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count audit outbox: %w", err)
	}
	return n, nil
}
