// Package idempotency makes create RPCs safe to retry. A request that carries a `request_id`
// field is run once per (tenant, method, request id) within 24 hours: a retry with the same id
// and the same request gets the first response; the same id with a different request is
// rejected; a retry while the first call still runs is told to retry later. Only successful
// responses are kept — a failed call may be retried with the same id — and a response field
// named "secret" is never kept: a retried CreateApiKey returns the key without its secret.
package idempotency

import (
	"context"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// Retention is how long a request id is remembered.
const Retention = 24 * time.Hour

// migrations create and evolve idempotency_keys in the service's own database, versioned apart
// from the service's tables (pgdb.MigrateNamed, version table goose_idempotency_version).
//
//go:embed migrations/*.sql
var migrations embed.FS

// MigrationSet names this package's migrations in pgdb.MigrateNamed.
const MigrationSet = "idempotency"

// Store keeps request ids and first responses in PostgreSQL.
type Store struct {
	pool *pgxpool.Pool
	now  func() time.Time
}

// New returns a store on pool, applying its migrations first.
func New(ctx context.Context, pool *pgxpool.Pool) (*Store, error) {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("idempotency migrations: %w", err)
	}
	if err := pgdb.MigrateNamed(ctx, pool, MigrationSet, sub); err != nil {
		return nil, err
	}
	return &Store{pool: pool, now: time.Now}, nil
}

// UnaryInterceptor applies idempotency to every request with a non-empty request_id field.
// Place it innermost (grpcserver.WithInnermost) so it only sees authorized, valid requests.
func (s *Store) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		msg, ok := req.(proto.Message)
		if !ok {
			return handler(ctx, req)
		}
		fd := msg.ProtoReflect().Descriptor().Fields().ByName("request_id")
		if fd == nil || fd.Kind() != protoreflect.StringKind {
			return handler(ctx, req)
		}
		id := msg.ProtoReflect().Get(fd).String()
		if id == "" {
			return handler(ctx, req)
		}
		if !telemetry.ValidRequestID(id) { // the same rule as the request id that travels in metadata
			var v apperr.Violations
			v.Add("request_id", "must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'")
			return nil, v.Err()
		}
		return s.once(ctx, msg, fd, id, info.FullMethod, handler)
	}
}

func scopeOf(ctx context.Context) string {
	if p := authn.FromContext(ctx); p != nil {
		return "tenant:" + p.TenantID
	}
	return "anonymous"
}

func (s *Store) once(ctx context.Context, msg proto.Message, fd protoreflect.FieldDescriptor, id, method string, handler grpc.UnaryHandler) (any, error) {
	// The fingerprint covers the request without its request_id.
	clone := proto.Clone(msg)
	clone.ProtoReflect().Clear(fd)
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(clone)
	if err != nil {
		return nil, fmt.Errorf("fingerprint request: %w", err)
	}
	sum := sha256.Sum256(body)
	scope := scopeOf(ctx)

	tag, err := s.pool.Exec(ctx, `INSERT INTO idempotency_keys (scope, method, request_id, request_hash) VALUES ($1, $2, $3, $4)
		ON CONFLICT (scope, method, request_id) DO UPDATE SET request_hash = excluded.request_hash, response = NULL, create_time = now()
		WHERE idempotency_keys.create_time < now() - $5::interval`, scope, method, id, sum[:], Retention)
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("claim request id: %w", err))
	}
	if tag.RowsAffected() == 0 {
		return s.replay(ctx, scope, method, id, sum[:])
	}
	resp, herr := handler(ctx, msg)
	if herr != nil {
		// Forget the claim so a retry can run again.
		if _, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE scope = $1 AND method = $2 AND request_id = $3`, scope, method, id); err != nil {
			return nil, errors.Join(herr, pgdb.Classify(fmt.Errorf("release request id: %w", err)))
		}
		return nil, herr
	}
	kept := proto.Clone(resp.(proto.Message))
	if fd := kept.ProtoReflect().Descriptor().Fields().ByName("secret"); fd != nil {
		kept.ProtoReflect().Clear(fd) // secrets are shown once, never kept
	}
	out, err := proto.Marshal(kept)
	if err != nil {
		return nil, fmt.Errorf("keep response: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `UPDATE idempotency_keys SET response = $4 WHERE scope = $1 AND method = $2 AND request_id = $3`,
		scope, method, id, out); err != nil {
		return nil, pgdb.Classify(fmt.Errorf("keep response: %w", err))
	}
	if s.now().Unix()%64 == 0 { // now and then, forget expired ids
		_, _ = s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE create_time < now() - $1::interval`, Retention)
	}
	return resp, nil
}

func (s *Store) replay(ctx context.Context, scope, method, id string, sum []byte) (any, error) {
	var hash, response []byte
	err := s.pool.QueryRow(ctx, `SELECT request_hash, response FROM idempotency_keys WHERE scope = $1 AND method = $2 AND request_id = $3`,
		scope, method, id).Scan(&hash, &response)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, apperr.New(apperr.Conflict, "REQUEST_IN_PROGRESS", "a request with this request_id just failed or is running; retry")
	}
	if err != nil {
		return nil, pgdb.Classify(fmt.Errorf("read request id: %w", err))
	}
	if string(hash) != string(sum) {
		return nil, apperr.New(apperr.Invalid, "REQUEST_ID_REUSED", "request_id was already used for a different request")
	}
	if response == nil {
		return nil, apperr.New(apperr.Conflict, "REQUEST_IN_PROGRESS", "a request with this request_id is still running; retry")
	}
	return decodeResponse(method, response)
}

// decodeResponse rebuilds the stored response as the method's output type.
func decodeResponse(method string, data []byte) (any, error) {
	md, err := methodDescriptor(method)
	if err != nil {
		return nil, err
	}
	mt, err := protoregistryTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return nil, fmt.Errorf("find response type of %s: %w", method, err)
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("decode kept response: %w", err)
	}
	return m, nil
}
