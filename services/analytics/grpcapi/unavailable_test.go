package grpcapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/analytics/app"
)

// records keeps the level and message of every log record.
type records struct {
	mu  sync.Mutex
	all []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, rec)
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) at(level slog.Level) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.all {
		if rec.Level == level {
			out = append(out, rec.Message)
		}
	}
	return out
}

// While ClickHouse cannot be reached, the query API answers UNAVAILABLE with the reason and a
// retry delay, through the whole server chain, and logs it as a warning, not an error (it was
// INTERNAL, logged at ERROR).
func TestQueriesWhileClickHouseIsDownAreUnavailable(t *testing.T) {
	db, _ := seededDatabase(t)
	proxy := chtest.NewProxy(t)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	ca := mtlstest.NewCA(t)
	logs := &records{}
	a := servicetest.StartAnalytics(t, servicetest.AnalyticsOptions{CA: ca, Database: db, Logger: slog.New(logs),
		Verifier: authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": pub})},
		Config:   func(c *app.Config) { c.ClickHouseAddr = proxy.Addr() }})
	e := &env{addr: a.Addr(), ca: ca, token: signer(t, priv)}
	c := e.client(t, "gateway")
	ctx := as(e.token("t1", rbac.Analyst))
	if got, _ := call(ctx, c, "GetCampaignSummary"); got != codes.OK {
		t.Fatalf("summary while ClickHouse is up: %s", got)
	}

	proxy.Close()
	for _, method := range []string{"GetCampaignSummary", "GetBreakdown", "GetFunnel", "WatchCampaignMetrics"} {
		_, err := invoke(ctx, c, method)
		meshtest.RequireStoreUnavailable(t, method+" while ClickHouse is down", status.Convert(err))
	}
	if errs := logs.at(slog.LevelError); len(errs) > 0 {
		t.Errorf("logged at ERROR: %v", errs)
	}
	if len(logs.at(slog.LevelWarn)) == 0 {
		t.Error("nothing logged at WARN")
	}
}
