package app_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/metadata"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/ingest/app"
)

// A service built on port 0 tells where it listens: the intake API over mTLS on Addr, /healthz
// and /metrics (with the server's, the domain's and the publisher's series) on AdminAddr.
// A rejected event is counted by field and reason, and kept in the dead-letter stream.
func TestServesWhereItListens(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	o := servicetest.IngestOptions{CA: mtlstest.NewCA(t), Verifier: authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": pub})}}
	o.Config = func(c *app.Config) { c.HealthListen = "127.0.0.1:0" }
	a := servicetest.StartIngest(t, o)
	conn := servicetest.Dial(t, a.Addr(), o.CA, "gateway", "ingest")
	servicetest.RequireServing(t, conn)
	servicetest.RequireHealthOnly(t, a.HealthAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now()
	tok, err := authn.Sign(authn.Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: authn.Issuer, Audience: jwt.ClaimStrings{authn.Audience},
		Subject: "user-1", IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))}, TenantID: "tenant-1", Role: "admin"}, "k", priv)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ingestv1.NewIngestServiceClient(conn).IngestEvents(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok),
		&ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{
			{EventId: "a", Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: "u"},
			{EventId: "b", Type: ingestv1.EventType_EVENT_TYPE_CLICK}, // no subject
		}})
	if err != nil || resp.GetAccepted() != 1 {
		t.Fatalf("IngestEvents = %v, %v", resp, err)
	}
	get := func(path string) string { return servicetest.AdminGet(t, a.AdminAddr(), path) }
	if body := get("/healthz"); body != "ok\n" {
		t.Errorf("/healthz: %q", body)
	}
	metrics := get("/metrics")
	for _, series := range []string{"grpc_server_handled_total", "ingest_events_accepted_total 1", "ingest_batches_published_total 1",
		`ingest_events_rejected_total{field="user_id",reason="user_id or anonymous_id is required"} 1`, "ingest_events_dead_lettered_total 1",
		"ingest_publish_seconds_count 1"} {
		if !strings.Contains(metrics, series) {
			t.Errorf("/metrics has no %s", series)
		}
	}
}

// New fails (releasing what it opened) when it cannot listen; Run returns why it stopped
// rather than nil.
func TestNewAndRunReportFailures(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	o := servicetest.IngestOptions{CA: mtlstest.NewCA(t), Verifier: authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": pub})}}
	running := servicetest.StartIngest(t, o)
	cfg := servicetest.IngestConfig(t, o)
	cfg.Listen = running.Addr()
	logger := slog.New(slog.DiscardHandler)
	if a, err := app.New(context.Background(), cfg, logger); err == nil || !strings.Contains(err.Error(), "listen "+running.Addr()) {
		if a != nil {
			a.Close()
		}
		t.Errorf("New on a port in use: %v", err)
	}

	cfg = servicetest.IngestConfig(t, o)
	cfg.NATS.URL = "nats://127.0.0.1:1"
	if a, err := app.New(context.Background(), cfg, logger); err == nil {
		a.Close()
		t.Error("New without NATS succeeded")
	}

	a, err := app.New(context.Background(), servicetest.IngestConfig(t, o), logger)
	if err != nil {
		t.Fatal(err)
	}
	a.Close() // the listeners go away under Run
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Run(ctx); err == nil || ctx.Err() != nil {
		t.Errorf("Run without its listeners: %v (context: %v), want their error at once", err, ctx.Err())
	}
}

// Against the real deploy/nats.conf as its own NATS user, ingest opens and watches the privacy
// bucket before serving; without a privacy key it does not start.
func TestStartsWithThePrivacyBucketUnderItsNATSRights(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srv, users := natstest.StartSecured(t)
	pwFile := filepath.Join(t.TempDir(), "nats-ingest")
	if err := os.WriteFile(pwFile, []byte(users.Ingest.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	o := servicetest.IngestOptions{CA: mtlstest.NewCA(t), Verifier: authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": pub})},
		Config: func(c *app.Config) {
			c.NATS = natsjs.ClientFlags{URL: srv.ClientURL(), User: users.Ingest.Name, PasswordFile: pwFile}
		}}
	a := servicetest.StartIngest(t, o)
	if a.Privacy() == nil {
		t.Fatal("no privacy view")
	}

	cfg := servicetest.IngestConfig(t, o)
	cfg.Hasher, cfg.PrivacyKeyFile = nil, filepath.Join(t.TempDir(), "missing")
	if a, err := app.New(context.Background(), cfg, slog.New(slog.DiscardHandler)); err == nil {
		a.Close()
		t.Fatal("New without a privacy key succeeded")
	} else if !strings.Contains(err.Error(), "privacy key") {
		t.Fatalf("New without a privacy key: %v", err)
	}
}
