package grpcapi

import (
	"context"
	"log/slog"

	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/idempotency"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/services/auth"
	"github.com/campaignmesh/campaignmesh/services/auth/postgres"
)

// ServerOptions are the platform options of the auth server, shared by main and the tests so
// both run the same chain: credentials verified locally (tokens with the keyring, API keys
// against the store), audit records appended straight to the audit log, idempotent creates, a
// database that is down answered as UNAVAILABLE.
func ServerOptions(ctx context.Context, svc *auth.Service, store *postgres.Store, logger *slog.Logger) ([]grpcserver.Option, error) {
	idem, err := idempotency.New(ctx, store.Pool())
	if err != nil {
		return nil, err
	}
	return []grpcserver.Option{
		grpcserver.WithService("auth"),
		grpcserver.WithLogger(logger),
		grpcserver.WithVerifier(authn.Verifier{Tokens: authn.NewJWTVerifier(svc.Keys()), Keys: svc, Revocations: svc}),
		grpcserver.WithAuditor(auth.AuditLog{Store: store, Logger: logger}),
		grpcserver.WithErrorClassifier(pgdb.Classify), // database down: UNAVAILABLE with retry info
		grpcserver.WithInnermost(idem.UnaryInterceptor()),
	}, nil
}
