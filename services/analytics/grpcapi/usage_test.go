package grpcapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/platform/usage"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/analytics/app"
	"github.com/campaignmesh/campaignmesh/services/analytics/grpcapi"
)

// meteredEnv is newEnv over a NATS server of the test's own (returned, so the test can stop
// it), the service running its query API only.
func meteredEnv(t *testing.T) (*env, *server.Server, jetstream.JetStream) {
	t.Helper()
	db, _ := seededDatabase(t)
	ns := natstest.StartServer(t)
	nc, js, err := natsjs.Connect(ns.ClientURL(), "usage-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if err := natsjs.EnsureStreams(context.Background(), js, natsjs.DefaultStream); err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	ca := mtlstest.NewCA(t)
	a := servicetest.StartAnalytics(t, servicetest.AnalyticsOptions{CA: ca, Database: db,
		Verifier: authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": pub})},
		Config:   func(c *app.Config) { c.NATS.URL, c.Roles = ns.ClientURL(), app.Roles{API: true} }})
	return &env{addr: a.Addr(), ca: ca, token: signer(t, priv)}, ns, js
}

// units decodes every unit on the USAGE stream.
func units(t *testing.T, js jetstream.JetStream) []usage.Unit {
	t.Helper()
	ctx := context.Background()
	n := natstest.StreamMsgs(t, js, usage.StreamName)
	if n == 0 {
		return nil
	}
	c, err := js.OrderedConsumer(ctx, usage.StreamName, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []usage.Unit
	for uint64(len(out)) < n {
		batch, err := c.Fetch(int(n)-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			u, err := usage.Decode(m)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, u)
		}
	}
	return out
}

// The public queries are exactly the RPCs that name a permission: the internal ones are
// never billed.
func TestMeteredMethodsArePublicQueries(t *testing.T) {
	got := grpcapi.MeteredMethods()
	slices.Sort(got)
	want := []string{"/campaignmesh.analytics.v1.AnalyticsService/GetBreakdown", "/campaignmesh.analytics.v1.AnalyticsService/GetCampaignSummary",
		"/campaignmesh.analytics.v1.AnalyticsService/GetFunnel", "/campaignmesh.analytics.v1.AnalyticsService/GetMetricSeries",
		"/campaignmesh.analytics.v1.AnalyticsService/WatchCampaignMetrics"}
	if !slices.Equal(got, want) {
		t.Fatalf("metered %v, want %v", got, want)
	}
}

// Every answered public query stores one unit of the caller's tenant on the USAGE stream, a
// live stream one when it opens; refused requests and internal calls store none.
func TestAnsweredQueriesAreRecorded(t *testing.T) {
	e, _, js := meteredEnv(t)
	c := e.client(t, "gateway")
	public := []string{"GetCampaignSummary", "GetMetricSeries", "GetBreakdown", "GetFunnel", "WatchCampaignMetrics"}
	for _, method := range public {
		if got, _ := call(as(e.token("t1", rbac.Analyst)), c, method); got != codes.OK {
			t.Fatalf("%s: %s", method, got)
		}
	}
	if got, _ := call(as(e.token("t2", rbac.Analyst)), c, "GetCampaignSummary"); got != codes.OK {
		t.Fatalf("t2 summary: %s", got)
	}
	// Refused before the query runs: invalid requests, a caller without the permission.
	ctx := as(e.token("t1", rbac.Analyst))
	if _, err := c.GetCampaignSummary(ctx, &analyticsv1.GetCampaignSummaryRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("summary without campaigns: %v", err)
	}
	if _, err := c.GetFunnel(ctx, &analyticsv1.GetFunnelRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("funnel without steps: %v", err)
	}
	s, err := c.WatchCampaignMetrics(ctx, &analyticsv1.WatchCampaignMetricsRequest{CampaignId: "c", IntervalSeconds: 61})
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("live stream with a bad interval: %v", err)
	}
	if got, _ := call(as(e.token("t1", rbac.Viewer)), c, "GetCampaignSummary"); got != codes.PermissionDenied {
		t.Fatalf("summary without the permission: %s", got)
	}
	// Internal calls are not queries of a tenant's users.
	if got, _ := call(context.Background(), e.client(t, "campaigns"), "GetCampaignSpend"); got != codes.OK {
		t.Fatalf("spend: %s", got)
	}

	got := units(t, js)
	perTenant := map[string]int{}
	ids := map[string]bool{}
	for _, u := range got {
		perTenant[u.Tenant]++
		ids[u.ID] = true
		if u.Meter != usage.MeterAnalyticsQueries || u.Units != 1 || time.Since(u.Time) > time.Minute {
			t.Errorf("unit %+v", u)
		}
	}
	if perTenant["t1"] != len(public) || perTenant["t2"] != 1 || len(perTenant) != 2 {
		t.Errorf("units per tenant %v, want t1: %d, t2: 1", perTenant, len(public))
	}
	if len(ids) != len(got) {
		t.Errorf("%d units share %d ids", len(got), len(ids))
	}
}

// While NATS is down no query is answered (it would go unbilled): UNAVAILABLE, with a retry
// delay and no transport detail.
func TestQueriesWhileUsageCannotBeRecordedAreUnavailable(t *testing.T) {
	e, ns, _ := meteredEnv(t)
	c := e.client(t, "gateway")
	ctx := as(e.token("t1", rbac.Analyst))
	if got, _ := call(ctx, c, "GetCampaignSummary"); got != codes.OK {
		t.Fatalf("summary while NATS is up: %s", got)
	}
	ns.Shutdown()
	for _, method := range []string{"GetCampaignSummary", "WatchCampaignMetrics"} {
		_, err := invoke(ctx, c, method)
		st := status.Convert(err)
		var reason string
		var retry time.Duration
		for _, d := range st.Details() {
			switch d := d.(type) {
			case *errdetails.ErrorInfo:
				reason = d.GetReason()
			case *errdetails.RetryInfo:
				retry = d.GetRetryDelay().AsDuration()
			}
		}
		if st.Code() != codes.Unavailable || reason != "USAGE_UNAVAILABLE" || retry <= 0 {
			t.Errorf("%s while NATS is down: %s %q reason %q retry %s, want UNAVAILABLE USAGE_UNAVAILABLE", method, st.Code(), st.Message(), reason, retry)
		}
		for _, leak := range []string{"nats", "127.0.0.1", "timeout", "deadline"} {
			if strings.Contains(strings.ToLower(st.Message()), leak) {
				t.Errorf("%s: message %q shows %q", method, st.Message(), leak)
			}
		}
	}
}
