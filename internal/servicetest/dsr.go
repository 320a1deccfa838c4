package servicetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"testing"
	"time"

	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/kek"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/services/dsr"
	"github.com/campaignmesh/campaignmesh/services/dsr/app"
	"github.com/campaignmesh/campaignmesh/services/dsr/participantclient"
)

// DsrOptions say how StartDsr builds the dsr service. The zero value is a fresh service with
// its own database and embedded NATS server, no participants, and no auth service: set
// Verifier (or AuthAddr) so that calls can be authenticated.
type DsrOptions struct {
	// CA issues the service's certificate; nil: a new CA.
	CA *mtls.CA
	// Database is the dsr database URL; empty: a fresh database.
	Database string
	// NATS is the JetStream server (and user) holding the PRIVACY bucket; empty URL: a new
	// embedded server without users.
	NATS natsjs.ClientFlags
	// AuthAddr is the auth service; empty: nowhere (audit records stay in the outbox).
	AuthAddr string
	// Verifier, when set, checks credentials instead of auth.
	Verifier grpcserver.Verifier
	// Hasher is the privacy hasher; nil: one with a fresh random key.
	Hasher *privacy.Hasher
	// KEKs seal the receipt key; nil: a fresh random one.
	KEKs *kek.Keys
	// Participants are dialed over mTLS (certificates of CA); Impls, when set, are used instead.
	Participants []participantclient.Spec
	Impls        []dsr.Participant
	// Logger receives the service's logs; nil: discarded.
	Logger *slog.Logger
	// Config, when set, makes last changes to the configuration.
	Config func(*app.Config)
}

// Dsr is a dsr service under test, serving on loopback until the test ends.
type Dsr struct {
	*app.App
	CA     *mtls.CA
	Hasher *privacy.Hasher
	// NATSURL is the NATS server holding the PRIVACY bucket.
	NATSURL string
	// Stop stops the service (also done when the test ends).
	Stop func()
}

// StartDsr builds the dsr service through its app package and runs it until the test ends.
func StartDsr(tb testing.TB, o DsrOptions) *Dsr {
	tb.Helper()
	cfg := DsrConfig(tb, &o)
	a, err := app.New(context.Background(), cfg, orDiscard(o.Logger))
	if err != nil {
		tb.Fatalf("build dsr: %v", err)
	}
	stop := run(tb, "dsr", a)
	return &Dsr{App: a, CA: o.CA, Hasher: o.Hasher, NATSURL: o.NATS.URL, Stop: stop}
}

// DsrConfig is the configuration StartDsr builds the service from; it fills in o what it made.
func DsrConfig(tb testing.TB, o *DsrOptions) app.Config {
	tb.Helper()
	if o.CA == nil {
		o.CA = mtlstest.NewCA(tb)
	}
	if o.Database == "" {
		o.Database = pgtest.NewDatabase(tb)
	}
	if o.NATS.URL == "" {
		o.NATS = natsjs.ClientFlags{URL: natstest.Start(tb)}
	}
	if o.Hasher == nil {
		h, err := privacy.NewHasher(randomBytes(32))
		if err != nil {
			tb.Fatal(err)
		}
		o.Hasher = h
	}
	if o.KEKs == nil {
		k, err := kek.Parse("test:" + base64.StdEncoding.EncodeToString(randomBytes(kek.Size)))
		if err != nil {
			tb.Fatal(err)
		}
		o.KEKs = k
	}
	cfg := app.DefaultConfig()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.PostgresURL, cfg.NATS = o.Database, o.NATS
	cfg.TLS = mtlstest.Files(tb, o.CA, app.ServiceName)
	cfg.AuthAddr = o.AuthAddr
	if cfg.AuthAddr == "" {
		cfg.AuthAddr = nowhere(tb)
	}
	cfg.Verifier, cfg.Hasher, cfg.KEKs = o.Verifier, o.Hasher, o.KEKs
	cfg.Participants, cfg.ParticipantImpls = o.Participants, o.Impls
	if cfg.ParticipantImpls == nil && cfg.Participants == nil {
		cfg.ParticipantImpls = []dsr.Participant{}
	}
	cfg.PollInterval, cfg.Lease = 50*time.Millisecond, 5*time.Second
	if o.Config != nil {
		o.Config(&cfg)
	}
	return cfg
}

// Client returns a client of the service with the mesh identity of service (e.g. "gateway").
func (d *Dsr) Client(tb testing.TB, service string) dsrv1.DsrServiceClient {
	tb.Helper()
	return dsrv1.NewDsrServiceClient(Dial(tb, d.Addr(), d.CA, service, app.ServiceName))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return bytes.Clone(b)
}
