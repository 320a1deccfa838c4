package servicetest

import (
	"context"
	"crypto/rand"
	"log/slog"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/services/ingest/app"
)

// IngestOptions say how StartIngest builds the service.
type IngestOptions struct {
	// CA issues the service's mesh certificate (required; clients dial with certificates of it).
	CA *mtls.CA
	// Verifier checks callers' credentials (required; e.g. authn.Verifier over static keys).
	Verifier grpcserver.Verifier
	// NATS is the JetStream server the service stores batches in; nil: a fresh embedded one
	// (tests that stop NATS or read the stream start their own with natstest.StartServer).
	NATS *server.Server
	// Logger receives the service's logs; nil: discarded.
	Logger *slog.Logger
	// Hasher keys the subject and property hashes of the privacy bucket; nil: one of a
	// random key (tests that put suppressions pass their own, to compute the hashes).
	Hasher *privacy.Hasher
	// Config, when set, makes last changes to the configuration (limits, rates, stream).
	Config func(*app.Config)
}

// StartIngest builds the ingest service through its app package, as cmd/ingest does, from
// IngestConfig, and runs it until the test ends. Run's error, if any, fails the test.
func StartIngest(tb testing.TB, o IngestOptions) *app.App {
	tb.Helper()
	a, err := app.New(context.Background(), IngestConfig(tb, o), orDiscard(o.Logger))
	if err != nil {
		tb.Fatalf("build ingest: %v", err)
	}
	run(tb, "ingest", a)
	return a
}

// IngestConfig is the configuration StartIngest builds the service from: o.NATS (or an
// embedded NATS server) without credentials, the documented stream, limits and rates,
// loopback listeners on free ports, a certificate of o.CA, o.Verifier and o.Hasher.
func IngestConfig(tb testing.TB, o IngestOptions) app.Config {
	tb.Helper()
	ns := o.NATS
	if ns == nil {
		ns = natstest.StartServer(tb)
	}
	cfg := app.DefaultConfig()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.TLS = mtlstest.Files(tb, o.CA, app.ServiceName)
	cfg.NATS = natsjs.ClientFlags{URL: ns.ClientURL()}
	cfg.Verifier = o.Verifier
	cfg.Hasher = o.Hasher
	if cfg.Hasher == nil {
		cfg.Hasher = NewPrivacyHasher(tb)
	}
	if o.Config != nil {
		o.Config(&cfg)
	}
	return cfg
}

// NewPrivacyHasher returns a privacy.Hasher of a random key.
func NewPrivacyHasher(tb testing.TB) *privacy.Hasher {
	tb.Helper()
	key := make([]byte, privacy.MinKeyBytes)
	_, _ = rand.Read(key)
	h, err := privacy.NewHasher(key)
	if err != nil {
		tb.Fatal(err)
	}
	return h
}
