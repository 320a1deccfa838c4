// Package postgres is the dsr service's PostgreSQL store: requests (each row the whole state of
// its job), the suppression list (hashes only), export chunks, receipt keys and policies.
package postgres

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/services/dsr"
	"github.com/campaignmesh/campaignmesh/services/dsr/receipt"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store implements dsr.Store.
type Store struct{ pool *pgxpool.Pool }

var _ dsr.Store = (*Store)(nil)

// Open connects to the database at url and applies the migrations (and the audit outbox's).
func Open(ctx context.Context, url string) (*Store, error) {
	pool, err := pgdb.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	sub, _ := fs.Sub(migrations, "migrations")
	if err = pgdb.Migrate(ctx, pool, sub); err == nil {
		err = auditpg.Migrate(ctx, pool)
	}
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &Store{pool: pool}, nil
}

// Close closes the connection pool.
func (s *Store) Close() { s.pool.Close() }

// Pool exposes the pool to the audit outbox and to tests.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

var openStates = []string{string(dsr.Received), string(dsr.Suppressing), string(dsr.Running), string(dsr.Verifying)}

const cols = `id, tenant_id, kind, regulation, state, coalesce(request_id, ''), subject, covered, participants, failure_reason,
	created_by, create_time, update_time, deadline_time, end_time, extension, export, receipt_payload, receipt_signature,
	receipt_key_id, next_attempt_at`

func scan(row pgx.CollectableRow) (dsr.Request, error) {
	var (
		r                       dsr.Request
		kind, reg, state        string
		subject, covered, parts []byte
		extension, export       []byte
		payload, keyID          *string
		signature               []byte
	)
	err := row.Scan(&r.ID, &r.TenantID, &kind, &reg, &state, &r.RequestID, &subject, &covered, &parts, &r.FailureReason,
		&r.CreatedBy, &r.CreateTime, &r.UpdateTime, &r.Deadline, &r.EndTime, &extension, &export, &payload, &signature,
		&keyID, &r.NextAttempt)
	if err != nil {
		return r, err
	}
	r.Kind, r.Regulation, r.State = dsr.Kind(kind), dsr.Regulation(reg), dsr.State(state)
	for _, f := range []struct {
		data []byte
		into any
	}{{subject, &r.Subject}, {covered, &r.Covered}, {parts, &r.Participants}, {extension, &r.Extension}, {export, &r.Export}} {
		if len(f.data) == 0 {
			continue
		}
		if err := json.Unmarshal(f.data, f.into); err != nil {
			return r, fmt.Errorf("request %s: stored json: %w", r.ID, err)
		}
	}
	if payload != nil {
		r.Receipt = &receipt.Receipt{Payload: *payload, Signature: signature, KeyID: *keyID}
	}
	return r, nil
}

func one(rows pgx.Rows, err error, id string) (dsr.Request, error) {
	if err != nil {
		return dsr.Request{}, fmt.Errorf("query request: %w", err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, scan)
	if errors.Is(err, pgx.ErrNoRows) {
		return dsr.Request{}, apperr.NotFoundf("request %s", id)
	}
	if err != nil {
		return dsr.Request{}, fmt.Errorf("read request %s: %w", id, err)
	}
	return r, nil
}

func js(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", v, err)) // plain data types: cannot fail
	}
	return b
}

// nullJSON is v as JSON, or NULL when v is a nil pointer.
func nullJSON[T any](v *T) []byte {
	if v == nil {
		return nil
	}
	return js(v)
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func writeRecord(ctx context.Context, tx pgx.Tx, rec *audit.Record, resource string) error {
	if rec == nil {
		return nil
	}
	r := *rec
	if resource != "" {
		r.Resource = resource
	}
	return auditpg.InsertTx(ctx, tx, r)
}

// CreateRequest implements dsr.Store.
func (s *Store) CreateRequest(ctx context.Context, r dsr.Request, sups []string, rec *audit.Record) (dsr.Request, bool, error) {
	var (
		out     dsr.Request
		created bool
	)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `INSERT INTO requests (id, tenant_id, kind, regulation, state, request_id, subject, covered,
			participants, created_by, create_time, update_time, deadline_time, next_attempt_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $11)
			ON CONFLICT (tenant_id, request_id) DO NOTHING RETURNING `+cols,
			r.ID, r.TenantID, r.Kind, r.Regulation, r.State, nullString(r.RequestID), js(r.Subject), js(r.Covered),
			js(r.Participants), r.CreatedBy, r.CreateTime, r.Deadline)
		if err != nil {
			return fmt.Errorf("insert request: %w", err)
		}
		got, err := pgx.CollectRows(rows, scan)
		if err != nil {
			return fmt.Errorf("insert request: %w", err)
		}
		if len(got) == 0 { // the tenant used this request_id before: the first request answers
			rows, err := tx.Query(ctx, `SELECT `+cols+` FROM requests WHERE tenant_id = $1 AND request_id = $2`, r.TenantID, r.RequestID)
			if out, err = one(rows, err, r.RequestID); err != nil {
				return err
			}
			return writeRecord(ctx, tx, rec, out.ID)
		}
		out, created = got[0], true
		for _, h := range sups {
			if _, err := tx.Exec(ctx, `INSERT INTO suppressions (tenant_id, subject_hash, request, create_time) VALUES ($1, $2, $3, $4)
				ON CONFLICT DO NOTHING`, r.TenantID, h, r.ID, r.CreateTime); err != nil {
				return fmt.Errorf("insert suppression: %w", err)
			}
		}
		return writeRecord(ctx, tx, rec, out.ID)
	})
	return out, created, err
}

// GetRequest implements dsr.Store.
func (s *Store) GetRequest(ctx context.Context, tenantID, id string) (dsr.Request, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+cols+` FROM requests WHERE tenant_id = $1 AND id = $2`, tenantID, id)
	return one(rows, err, id)
}

// ListRequests implements dsr.Store.
func (s *Store) ListRequests(ctx context.Context, tenantID string, q dsr.ListQuery) ([]dsr.Request, error) {
	var states, kinds []string
	for _, st := range q.States {
		states = append(states, string(st))
	}
	for _, k := range q.Kinds {
		kinds = append(kinds, string(k))
	}
	var afterT *time.Time
	afterID := ""
	if q.After != nil {
		afterT, afterID = &q.After.CreateTime, q.After.ID
	}
	rows, err := s.pool.Query(ctx, `SELECT `+cols+` FROM requests WHERE tenant_id = $1
		AND (coalesce(cardinality($2::text[]), 0) = 0 OR state = ANY($2))
		AND (coalesce(cardinality($3::text[]), 0) = 0 OR kind = ANY($3))
		AND (NOT $4 OR (state = ANY($5) AND deadline_time < $6))
		AND ($7::timestamptz IS NULL OR (create_time, id) < ($7, $8))
		ORDER BY create_time DESC, id DESC LIMIT $9`,
		tenantID, states, kinds, q.Overdue, openStates, q.Now, afterT, afterID, q.Size)
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	out, err := pgx.CollectRows(rows, scan)
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	return out, nil
}

// UpdateRequest implements dsr.Store.
func (s *Store) UpdateRequest(ctx context.Context, tenantID, id string, change func(*dsr.Request) (bool, *audit.Record, error)) (dsr.Request, []string, error) {
	var (
		out     dsr.Request
		removed []string
	)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+cols+` FROM requests WHERE tenant_id = $1 AND id = $2 FOR UPDATE`, tenantID, id)
		r, err := one(rows, err, id)
		if err != nil {
			return err
		}
		removeOwn, rec, err := change(&r)
		if err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `UPDATE requests SET state = $2, end_time = $3, update_time = $4, extension = $5,
			deadline_time = $6 WHERE id = $1 RETURNING `+cols, id, r.State, r.EndTime, r.UpdateTime, nullJSON(r.Extension), r.Deadline)
		if out, err = one(rows, err, id); err != nil {
			return err
		}
		if removeOwn {
			rows, err := tx.Query(ctx, `DELETE FROM suppressions WHERE request = $1 RETURNING subject_hash`, id)
			if err != nil {
				return fmt.Errorf("delete suppressions: %w", err)
			}
			if removed, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return fmt.Errorf("delete suppressions: %w", err)
			}
			if _, err := tx.Exec(ctx, `DELETE FROM export_chunks WHERE request = $1`, id); err != nil {
				return fmt.Errorf("delete export: %w", err)
			}
		}
		return writeRecord(ctx, tx, rec, id)
	})
	return out, removed, err
}

// ClaimDue implements dsr.Store.
func (s *Store) ClaimDue(ctx context.Context, runner string, now time.Time, lease time.Duration, limit int) ([]dsr.Request, error) {
	rows, err := s.pool.Query(ctx, `UPDATE requests SET next_attempt_at = $2, claimed_by = $5 WHERE id IN (
			SELECT id FROM requests WHERE state = ANY($3) AND next_attempt_at <= $1
			ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED)
		RETURNING `+cols, now, now.Add(lease), openStates, limit, runner)
	if err != nil {
		return nil, fmt.Errorf("claim due requests: %w", err)
	}
	out, err := pgx.CollectRows(rows, scan)
	if err != nil {
		return nil, fmt.Errorf("claim due requests: %w", err)
	}
	return out, nil
}

// ReleaseClaims implements dsr.Store.
func (s *Store) ReleaseClaims(ctx context.Context, runner string, now time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE requests SET next_attempt_at = $2
		WHERE claimed_by = $1 AND state = ANY($3) AND next_attempt_at > $2`, runner, now, openStates)
	if err != nil {
		return 0, fmt.Errorf("release claims of %s: %w", runner, err)
	}
	return int(tag.RowsAffected()), nil
}

// SaveProgress implements dsr.Store.
func (s *Store) SaveProgress(ctx context.Context, p dsr.Progress) error {
	r := p.Request
	var payload, keyID *string
	var sig []byte
	if r.Receipt != nil {
		payload, keyID, sig = &r.Receipt.Payload, &r.Receipt.KeyID, r.Receipt.Signature
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE requests SET state = $3, covered = $4, participants = $5, failure_reason = $6,
			update_time = $7, end_time = $8, export = $9, receipt_payload = $10, receipt_signature = $11, receipt_key_id = $12,
			next_attempt_at = $13 WHERE id = $1 AND state = $2`,
			r.ID, p.Expect, r.State, js(r.Covered), js(r.Participants), r.FailureReason, r.UpdateTime, r.EndTime,
			nullJSON(r.Export), payload, sig, keyID, r.NextAttempt)
		if err != nil {
			return fmt.Errorf("save request %s: %w", r.ID, err)
		}
		if tag.RowsAffected() == 0 {
			return dsr.ErrStale
		}
		for _, h := range p.AddSuppressions {
			if _, err := tx.Exec(ctx, `INSERT INTO suppressions (tenant_id, subject_hash, request, create_time) VALUES ($1, $2, $3, $4)
				ON CONFLICT DO NOTHING`, r.TenantID, h, r.ID, r.UpdateTime); err != nil {
				return fmt.Errorf("insert suppression: %w", err)
			}
		}
		if len(p.RemoveSuppressions) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM suppressions WHERE tenant_id = $1 AND subject_hash = ANY($2)`, r.TenantID, p.RemoveSuppressions); err != nil {
				return fmt.Errorf("delete suppressions: %w", err)
			}
		}
		return nil
	})
}

// Release implements dsr.Store.
func (s *Store) Release(ctx context.Context, id string, at time.Time) error {
	if _, err := s.pool.Exec(ctx, `UPDATE requests SET next_attempt_at = $2 WHERE id = $1`, id, at); err != nil {
		return fmt.Errorf("release request %s: %w", id, err)
	}
	return nil
}

// RequestSuppressions implements dsr.Store.
func (s *Store) RequestSuppressions(ctx context.Context, tenantID, requestID string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT subject_hash FROM suppressions WHERE tenant_id = $1 AND request = $2 ORDER BY subject_hash`, tenantID, requestID)
	if err != nil {
		return nil, fmt.Errorf("list suppressions: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Unheld implements dsr.Store.
func (s *Store) Unheld(ctx context.Context, tenantID string, hashes []string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT h FROM unnest($2::text[]) h
		WHERE NOT EXISTS (SELECT 1 FROM suppressions WHERE tenant_id = $1 AND subject_hash = h)`, tenantID, hashes)
	if err != nil {
		return nil, fmt.Errorf("check suppressions: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

const supCols = `tenant_id, subject_hash, min(create_time), (array_agg(request ORDER BY create_time, request))[1]`

func scanSup(row pgx.CollectableRow) (dsr.Suppression, error) {
	var s dsr.Suppression
	err := row.Scan(&s.TenantID, &s.Hash, &s.CreateTime, &s.RequestID)
	return s, err
}

// ListSuppressions implements dsr.Store.
func (s *Store) ListSuppressions(ctx context.Context, tenantID string, size int, after *dsr.Suppression) ([]dsr.Suppression, error) {
	var afterT *time.Time
	afterH := ""
	if after != nil {
		afterT, afterH = &after.CreateTime, after.Hash
	}
	rows, err := s.pool.Query(ctx, `SELECT `+supCols+` FROM suppressions WHERE tenant_id = $1 GROUP BY tenant_id, subject_hash
		HAVING $2::timestamptz IS NULL OR (min(create_time), subject_hash) < ($2, $3)
		ORDER BY min(create_time) DESC, subject_hash DESC LIMIT $4`, tenantID, afterT, afterH, size)
	if err != nil {
		return nil, fmt.Errorf("list suppressions: %w", err)
	}
	return pgx.CollectRows(rows, scanSup)
}

// GetSuppression implements dsr.Store.
func (s *Store) GetSuppression(ctx context.Context, tenantID, hash string) (dsr.Suppression, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+supCols+` FROM suppressions WHERE tenant_id = $1 AND subject_hash = $2
		GROUP BY tenant_id, subject_hash`, tenantID, hash)
	if err != nil {
		return dsr.Suppression{}, fmt.Errorf("get suppression: %w", err)
	}
	sup, err := pgx.CollectExactlyOneRow(rows, scanSup)
	if errors.Is(err, pgx.ErrNoRows) {
		return sup, apperr.New(apperr.NotFound, "NOT_SUPPRESSED", "the identifier is not suppressed")
	}
	return sup, err
}

// EachSuppression implements dsr.Store.
func (s *Store) EachSuppression(ctx context.Context, fn func(dsr.Suppression) error) error {
	rows, err := s.pool.Query(ctx, `SELECT `+supCols+` FROM suppressions GROUP BY tenant_id, subject_hash`)
	if err != nil {
		return fmt.Errorf("list suppressions: %w", err)
	}
	all, err := pgx.CollectRows(rows, scanSup)
	if err != nil {
		return fmt.Errorf("list suppressions: %w", err)
	}
	for _, sup := range all {
		if err := fn(sup); err != nil {
			return err
		}
	}
	return nil
}

// Suppressed implements dsr.Store.
func (s *Store) Suppressed(ctx context.Context, tenantID, hash string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM suppressions WHERE tenant_id = $1 AND subject_hash = $2)`, tenantID, hash).Scan(&ok)
	return ok, err
}

// DeleteExportChunks implements dsr.Store.
func (s *Store) DeleteExportChunks(ctx context.Context, requestID, participant string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM export_chunks WHERE request = $1 AND participant = $2`, requestID, participant); err != nil {
		return fmt.Errorf("delete export chunks: %w", err)
	}
	return nil
}

// AppendExportChunk implements dsr.Store.
func (s *Store) AppendExportChunk(ctx context.Context, requestID string, c dsr.Chunk) error {
	tag, err := s.pool.Exec(ctx, `INSERT INTO export_chunks (request, participant, seq, records, data)
		SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM requests WHERE id = $1 AND state = 'running')`,
		requestID, c.Participant, c.Seq, c.Records, c.Data)
	if err != nil {
		return fmt.Errorf("store export chunk: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return dsr.ErrStale
	}
	return nil
}

// NextExportChunk implements dsr.Store.
func (s *Store) NextExportChunk(ctx context.Context, requestID, participant string, seq int) (dsr.Chunk, bool, error) {
	c := dsr.Chunk{}
	err := s.pool.QueryRow(ctx, `SELECT participant, seq, records, data FROM export_chunks
		WHERE request = $1 AND (participant, seq) > ($2, $3) ORDER BY participant, seq LIMIT 1`, requestID, participant, seq).
		Scan(&c.Participant, &c.Seq, &c.Records, &c.Data)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("read export chunk: %w", err)
	}
	return c, true, nil
}

func scanPolicy(version int64, data []byte, updated *time.Time) (dsr.Policy, error) {
	var p dsr.Policy
	if err := json.Unmarshal(data, &p.Policy); err != nil {
		return p, fmt.Errorf("stored policy: %w", err)
	}
	p.Version, p.UpdateTime = version, updated
	return p, nil
}

// GetPolicy implements dsr.Store.
func (s *Store) GetPolicy(ctx context.Context, tenantID string) (dsr.Policy, error) {
	var (
		version int64
		data    []byte
		updated time.Time
	)
	err := s.pool.QueryRow(ctx, `SELECT version, policy, update_time FROM policies WHERE tenant_id = $1`, tenantID).Scan(&version, &data, &updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return dsr.Policy{}, nil
	}
	if err != nil {
		return dsr.Policy{}, fmt.Errorf("get policy: %w", err)
	}
	return scanPolicy(version, data, &updated)
}

// UpdatePolicy implements dsr.Store.
func (s *Store) UpdatePolicy(ctx context.Context, tenantID string, change func(*dsr.Policy) (*audit.Record, error)) (dsr.Policy, error) {
	var out dsr.Policy
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// A placeholder row to lock: the change either stores a version ≥ 1 or rolls back.
		if _, err := tx.Exec(ctx, `INSERT INTO policies (tenant_id, version, policy, update_time) VALUES ($1, 0, '{}', now())
			ON CONFLICT DO NOTHING`, tenantID); err != nil {
			return fmt.Errorf("lock policy: %w", err)
		}
		var (
			version int64
			data    []byte
			updated time.Time
		)
		if err := tx.QueryRow(ctx, `SELECT version, policy, update_time FROM policies WHERE tenant_id = $1 FOR UPDATE`, tenantID).
			Scan(&version, &data, &updated); err != nil {
			return fmt.Errorf("lock policy: %w", err)
		}
		p, err := scanPolicy(version, data, &updated)
		if err != nil {
			return err
		}
		if version == 0 {
			p.UpdateTime = nil
		}
		rec, err := change(&p)
		if err != nil {
			return err
		}
		p.Policy.Version = p.Version
		if _, err := tx.Exec(ctx, `UPDATE policies SET version = $2, policy = $3, update_time = $4 WHERE tenant_id = $1`,
			tenantID, p.Version, js(p.Policy), p.UpdateTime); err != nil {
			return fmt.Errorf("store policy: %w", err)
		}
		out = p
		return writeRecord(ctx, tx, rec, "policy")
	})
	return out, err
}

// EachPolicy implements dsr.Store.
func (s *Store) EachPolicy(ctx context.Context, fn func(string, dsr.Policy) error) error {
	rows, err := s.pool.Query(ctx, `SELECT tenant_id, version, policy, update_time FROM policies WHERE version > 0`)
	if err != nil {
		return fmt.Errorf("list policies: %w", err)
	}
	type row struct {
		tenant  string
		version int64
		data    []byte
		updated time.Time
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.tenant, &x.version, &x.data, &x.updated)
	})
	if err != nil {
		return fmt.Errorf("list policies: %w", err)
	}
	for _, x := range all {
		p, err := scanPolicy(x.version, x.data, &x.updated)
		if err != nil {
			return err
		}
		if err := fn(x.tenant, p); err != nil {
			return err
		}
	}
	return nil
}

// ReceiptKeys implements dsr.Store.
func (s *Store) ReceiptKeys(ctx context.Context) ([]dsr.ReceiptKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT kid, public_key, kek_id, private_key, create_time FROM receipt_keys ORDER BY create_time DESC, kid`)
	if err != nil {
		return nil, fmt.Errorf("list receipt keys: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (dsr.ReceiptKey, error) {
		var k dsr.ReceiptKey
		return k, r.Scan(&k.KID, &k.Public, &k.KEKID, &k.Sealed, &k.CreateTime)
	})
}

// InsertReceiptKey implements dsr.Store.
func (s *Store) InsertReceiptKey(ctx context.Context, k dsr.ReceiptKey) error {
	// Replicas starting together: the first key wins, the others keep it.
	if _, err := s.pool.Exec(ctx, `INSERT INTO receipt_keys (kid, public_key, private_key, kek_id, create_time)
		SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM receipt_keys)`, k.KID, k.Public, k.Sealed, k.KEKID, k.CreateTime); err != nil {
		return fmt.Errorf("store receipt key: %w", err)
	}
	return nil
}

// ResealReceiptKey implements dsr.Store.
func (s *Store) ResealReceiptKey(ctx context.Context, kid, oldKEK, newKEK string, sealed []byte) error {
	if _, err := s.pool.Exec(ctx, `UPDATE receipt_keys SET private_key = $4, kek_id = $3 WHERE kid = $1 AND kek_id = $2`,
		kid, oldKEK, newKEK, sealed); err != nil {
		return fmt.Errorf("re-encrypt receipt key: %w", err)
	}
	return nil
}

// PurgeExports implements dsr.Store.
func (s *Store) PurgeExports(ctx context.Context, before time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM export_chunks WHERE request IN (
		SELECT id FROM requests WHERE end_time < $1 AND kind = 'access')`, before)
	if err != nil {
		return 0, fmt.Errorf("purge exports: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// PurgeIdentifiers implements dsr.Store.
func (s *Store) PurgeIdentifiers(ctx context.Context, before time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE requests SET identifiers_purged = true,
		subject = (SELECT coalesce(jsonb_agg(jsonb_set(e, '{value}', '""') ORDER BY i), '[]') FROM jsonb_array_elements(subject) WITH ORDINALITY AS a(e, i)),
		covered = (SELECT coalesce(jsonb_agg(jsonb_set(e, '{value}', '""') ORDER BY i), '[]') FROM jsonb_array_elements(covered) WITH ORDINALITY AS a(e, i))
		WHERE end_time < $1 AND NOT identifiers_purged`, before)
	if err != nil {
		return 0, fmt.Errorf("purge identifiers: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// Stats implements dsr.Store.
func (s *Store) Stats(ctx context.Context, now time.Time) (dsr.OpenStats, error) {
	st := dsr.OpenStats{ByState: map[dsr.State]int{}}
	rows, err := s.pool.Query(ctx, `SELECT state, count(*), min(create_time), count(*) FILTER (WHERE deadline_time < $1)
		FROM requests WHERE state = ANY($2) GROUP BY state`, now, openStates)
	if err != nil {
		return st, fmt.Errorf("count open requests: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			state      string
			n, overdue int
			oldest     time.Time
		)
		if err := rows.Scan(&state, &n, &oldest, &overdue); err != nil {
			return st, fmt.Errorf("count open requests: %w", err)
		}
		st.ByState[dsr.State(state)] = n
		st.Open += n
		st.Overdue += overdue
		if st.Oldest.IsZero() || oldest.Before(st.Oldest) {
			st.Oldest = oldest
		}
	}
	return st, rows.Err()
}
