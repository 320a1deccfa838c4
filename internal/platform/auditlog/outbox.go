package auditlog

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
)

const outboxSchema = `CREATE TABLE IF NOT EXISTS audit_outbox (
    id          uuid PRIMARY KEY,
    record      bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS audit_outbox_age ON audit_outbox (create_time);`

// batchSize matches auth's AppendAuditRecords limit.
const batchSize = 500

// Outbox is the Auditor of services other than auth: durable first, delivered later.
type Outbox struct {
	pool   *pgxpool.Pool
	client authv1.AuthServiceClient
	logger *slog.Logger
	wake   chan struct{}
}

var _ audit.Sink = (*Outbox)(nil)

// NewOutbox returns an outbox in the service's database (creating its table if needed) that
// delivers to auth through client. Run must be running for records to leave.
func NewOutbox(ctx context.Context, pool *pgxpool.Pool, client authv1.AuthServiceClient, logger *slog.Logger) (*Outbox, error) {
	if err := CreateOutboxTable(ctx, pool); err != nil {
		return nil, err
	}
	return &Outbox{pool: pool, client: client, logger: logger, wake: make(chan struct{}, 1)}, nil
}

var _ audit.Waker = (*Outbox)(nil)

// execer is a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func insert(ctx context.Context, db execer, r audit.Record) error {
	data, err := proto.Marshal(ToProto(r))
	if err == nil {
		_, err = db.Exec(ctx, `INSERT INTO audit_outbox (id, record) VALUES ($1, $2)`, r.ID, data)
	}
	return err
}

// InsertTx stores r in tx: the record commits with the change it audits, or neither does. A
// store calls it with the record its domain took (audit.Take) and passed to it. The outbox
// table must exist (CreateOutboxTable).
func InsertTx(ctx context.Context, tx pgx.Tx, r audit.Record) error {
	if err := insert(ctx, tx, r); err != nil {
		return fmt.Errorf("store audit record: %w", err)
	}
	return nil
}

// CreateOutboxTable creates the outbox's table if needed: for stores that write records with
// RecordTx.
func CreateOutboxTable(ctx context.Context, pool *pgxpool.Pool) error {
	if _, err := pool.Exec(ctx, outboxSchema); err != nil {
		return fmt.Errorf("create audit outbox: %w", err)
	}
	return nil
}

// RecordTx stores the audit record of the audited work in ctx (audit.Take), as a success
// on resource in tenantID, in tx: the record commits with the change it audits, or neither
// does. id, when not empty, is the record's id (e.g. that of the change's own row). Outside
// audited work it does nothing. The outbox table must exist (CreateOutboxTable).
func RecordTx(ctx context.Context, tx pgx.Tx, id, tenantID, resource string) error {
	r, ok := audit.Take(ctx, tenantID, resource)
	if !ok {
		return nil
	}
	if id != "" {
		r.ID = id
	}
	if err := insert(ctx, tx, r); err != nil {
		return fmt.Errorf("store audit record: %w", err)
	}
	return nil
}

// Wake implements audit.Waker: records were stored with RecordTx; deliver them soon.
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
		case n == batchSize:
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
	rows, err := o.pool.Query(ctx, `SELECT id::text, record FROM audit_outbox ORDER BY create_time, id LIMIT $1`, batchSize)
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
