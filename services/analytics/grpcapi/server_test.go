package grpcapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

type env struct {
	addr  string
	ca    *mtls.CA
	token func(tenant string, role rbac.Role) string
}

// newEnv serves the analytics API over mTLS through the platform's interceptor chain (the
// service built by its app package), over a fresh ClickHouse database holding one click of
// campaign "c" for each of tenants t1 and t2 (t2's worth 2,000 micros, t1's 1,000).
func newEnv(t *testing.T) *env {
	t.Helper()
	db, _ := seededDatabase(t)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	ca := mtlstest.NewCA(t)
	a := servicetest.StartAnalytics(t, servicetest.AnalyticsOptions{CA: ca, Database: db,
		Verifier: authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": pub})}})
	return &env{addr: a.Addr(), ca: ca, token: signer(t, priv)}
}

// signer mints access tokens signed with priv under key id "k", as auth would.
func signer(t *testing.T, priv ed25519.PrivateKey) func(tenant string, role rbac.Role) string {
	return func(tenant string, role rbac.Role) string {
		if !role.TenantScoped() {
			tenant = "" // operators act above tenants
		}
		now := time.Now()
		tok, err := authn.Sign(authn.Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: authn.Issuer, Audience: jwt.ClaimStrings{authn.Audience},
			Subject: "user-" + string(role), IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))}, TenantID: tenant, Role: string(role)}, "k", priv)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
}

// seededDatabase is a fresh ClickHouse database holding one click of campaign "c" for each of
// tenants t1 and t2 (t2's worth 2,000 micros, t1's 1,000), and the writer user's connection
// to it.
func seededDatabase(t *testing.T) (string, driver.Conn) {
	t.Helper()
	ctx := context.Background()
	db := chtest.NewDatabase(t)
	conn, err := clickhouse.Open(ctx, chtest.Addr(), db, clickhouse.User(chtest.Writer(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	now := timestamppb.Now()
	var rows []writer.Row
	for i, tenant := range []string{"t1", "t2"} {
		rows = append(rows, writer.Row{Seq: 1, Event: &ingestv1.AcceptedEvent{TenantId: tenant, ReceivedAt: now, CorrectedTime: now,
			Event: &ingestv1.Event{EventId: "e", Type: ingestv1.EventType_EVENT_TYPE_CLICK, Name: "tap", UserId: "u-" + tenant, CampaignId: "c",
				Value: &ingestv1.Money{AmountMicros: int64(1000 * (i + 1)), Currency: "USD"}}}})
	}
	if err := clickhouse.NewEventSink(conn).InsertAll(ctx, rows); err != nil {
		t.Fatal(err)
	}
	return db, conn
}

// client dials as the given mesh identity (the gateway forwards end users' calls).
func (e *env) client(t *testing.T, identity string) analyticsv1.AnalyticsServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(mtlstest.Source(t, e.ca, identity).ClientConfig("analytics"))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return analyticsv1.NewAnalyticsServiceClient(conn)
}

func as(tok string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

// call makes one RPC by name with a valid request and returns its code and the response
// (the first push, for the live stream).
func call(ctx context.Context, c analyticsv1.AnalyticsServiceClient, method string) (codes.Code, proto.Message) {
	resp, err := invoke(ctx, c, method)
	return status.Code(err), resp
}

// invoke is call returning the error itself.
func invoke(ctx context.Context, c analyticsv1.AnalyticsServiceClient, method string) (proto.Message, error) {
	var resp proto.Message
	var err error
	switch method {
	case "GetCampaignSummary":
		resp, err = c.GetCampaignSummary(ctx, &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{"c"}})
	case "GetMetricSeries":
		resp, err = c.GetMetricSeries(ctx, &analyticsv1.GetMetricSeriesRequest{CampaignId: "c", Granularity: analyticsv1.Granularity_GRANULARITY_HOUR,
			StartTime: timestamppb.New(time.Now().Add(-2 * time.Hour))})
	case "GetBreakdown":
		resp, err = c.GetBreakdown(ctx, &analyticsv1.GetBreakdownRequest{Dimension: analyticsv1.Dimension_DIMENSION_CAMPAIGN})
	case "GetFunnel":
		resp, err = c.GetFunnel(ctx, &analyticsv1.GetFunnelRequest{Steps: []*analyticsv1.FunnelStep{{EventName: "tap"}, {EventName: "buy"}}})
	case "WatchCampaignMetrics":
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var s analyticsv1.AnalyticsService_WatchCampaignMetricsClient
		if s, err = c.WatchCampaignMetrics(ctx, &analyticsv1.WatchCampaignMetricsRequest{CampaignId: "c", IntervalSeconds: 1}); err == nil {
			resp, err = s.Recv()
		}
	case "GetCampaignSpend":
		resp, err = c.GetCampaignSpend(ctx, &analyticsv1.GetCampaignSpendRequest{TenantId: "t1", CampaignIds: []string{"c"},
			StartTime: timestamppb.New(time.Now().Add(-time.Hour).Truncate(time.Hour)), EndTime: timestamppb.New(time.Now().Add(time.Hour).Truncate(time.Hour))})
	case "MatchBehaviour":
		resp, err = c.MatchBehaviour(ctx, &analyticsv1.MatchBehaviourRequest{TenantId: "t1", EventType: "click",
			StartTime: timestamppb.New(time.Now().Add(-24 * time.Hour)), UserIds: []string{"u1"}})
	case "GetUsageCounts":
		resp, err = c.GetUsageCounts(ctx, &analyticsv1.GetUsageCountsRequest{Day: time.Now().UTC().Format(time.DateOnly)})
	case "DeleteEvents":
		resp, err = c.DeleteEvents(ctx, &analyticsv1.DeleteEventsRequest{TenantId: "t9", SubjectId: "nobody"})
	default:
		panic("no request for " + method)
	}
	return resp, err
}

// TestAuthorizationMatrix calls every RPC as every tenant role through the gateway identity,
// and as each mesh identity without a user credential; the expected code comes from the RPC's
// access rule, so a handler or rule that authorizes differently fails here.
func TestAuthorizationMatrix(t *testing.T) {
	e := newEnv(t)
	sd := analyticsv1.File_campaignmesh_analytics_v1_analytics_proto.Services().Get(0)
	callers := map[string]analyticsv1.AnalyticsServiceClient{}
	for _, id := range []string{"gateway", "campaigns", "dsr", "delivery", "billing", "ingest"} {
		callers[id] = e.client(t, id)
	}
	for i := 0; i < sd.Methods().Len(); i++ {
		md := sd.Methods().Get(i)
		method := string(md.Name())
		rule := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule)
		for _, role := range rbac.Roles() {
			want := codes.PermissionDenied
			if p := rule.GetPermission(); p != "" && role.Has(p) {
				want = codes.OK
			}
			if got, _ := call(as(e.token("t1", role)), callers["gateway"], method); got != want {
				t.Errorf("%s as %s: %s, want %s", method, role, got, want)
			}
		}
		for id, c := range callers {
			want := codes.Unauthenticated // a user RPC without a user credential
			if s := rule.GetCallers().GetServices(); s != nil {
				want = codes.PermissionDenied
				for _, allowed := range s {
					if allowed == id {
						want = codes.OK
					}
				}
			}
			if got, _ := call(context.Background(), c, method); got != want {
				t.Errorf("%s as mesh identity %s: %s, want %s", method, id, got, want)
			}
		}
	}
}

// TestTenantIsolation: each tenant's calls see only its own click, whatever the RPC.
func TestTenantIsolation(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, "gateway")
	for tenant, spend := range map[string]int64{"t1": 1000, "t2": 2000} {
		ctx := as(e.token(tenant, rbac.Admin))
		_, resp := call(ctx, c, "GetCampaignSummary")
		if m := resp.(*analyticsv1.GetCampaignSummaryResponse).GetTotal(); m.GetClicks() != 1 || m.GetSpend()[0].GetAmountMicros() != spend {
			t.Errorf("%s summary: %v", tenant, m)
		}
		_, resp = call(ctx, c, "GetMetricSeries")
		var clicks int64
		for _, b := range resp.(*analyticsv1.GetMetricSeriesResponse).GetBuckets() {
			clicks += b.GetMetrics().GetClicks()
		}
		if clicks != 1 {
			t.Errorf("%s series: %d clicks, want 1", tenant, clicks)
		}
		_, resp = call(ctx, c, "GetBreakdown")
		if rows := resp.(*analyticsv1.GetBreakdownResponse).GetRows(); len(rows) != 1 || rows[0].GetMetrics().GetSpend()[0].GetAmountMicros() != spend {
			t.Errorf("%s breakdown: %v", tenant, rows)
		}
		_, resp = call(ctx, c, "GetFunnel")
		if st := resp.(*analyticsv1.GetFunnelResponse).GetSteps(); st[0].GetUsers() != 1 {
			t.Errorf("%s funnel: %v", tenant, st)
		}
		_, resp = call(ctx, c, "WatchCampaignMetrics")
		if m := resp.(*analyticsv1.WatchCampaignMetricsResponse).GetMetrics(); m.GetClicks() != 1 || m.GetSpend()[0].GetAmountMicros() != spend {
			t.Errorf("%s live: %v", tenant, m)
		}
	}
	// The internal spend RPC answers for the tenant named in the request only.
	_, resp := call(context.Background(), e.client(t, "campaigns"), "GetCampaignSpend")
	if s := resp.(*analyticsv1.GetCampaignSpendResponse).GetSpends(); len(s) != 1 || s[0].GetSpendMicros() != 1000 {
		t.Errorf("spend of t1: %v", s)
	}
}

// TestLiveStreamPushesEveryInterval reads three pushes and checks their spacing.
func TestLiveStreamPushesEveryInterval(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(as(e.token("t1", rbac.Analyst)))
	defer cancel()
	s, err := e.client(t, "gateway").WatchCampaignMetrics(ctx, &analyticsv1.WatchCampaignMetricsRequest{CampaignId: "c", IntervalSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	var times []time.Time
	for len(times) < 3 {
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("push %d: %v", len(times), err)
		}
		times = append(times, m.GetTime().AsTime())
	}
	if gap := times[2].Sub(times[1]); gap < 900*time.Millisecond {
		t.Errorf("pushes %s apart, want about the 1 s interval", gap)
	}
	bad, err := e.client(t, "gateway").WatchCampaignMetrics(ctx, &analyticsv1.WatchCampaignMetricsRequest{CampaignId: "c", IntervalSeconds: 61})
	if err == nil {
		_, err = bad.Recv() // a stream's error arrives with its first message
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("interval 61 s: %v, want INVALID_ARGUMENT", err)
	}
}
