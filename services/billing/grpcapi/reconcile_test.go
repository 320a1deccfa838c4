package grpcapi_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/campaignmesh/campaignmesh/gateway"
	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	stripestandin "github.com/campaignmesh/campaignmesh/internal/standin/stripe"
	"github.com/campaignmesh/campaignmesh/services/billing"
	"github.com/campaignmesh/campaignmesh/services/billing/grpcapi"
	"github.com/campaignmesh/campaignmesh/services/billing/postgres"
	"github.com/campaignmesh/campaignmesh/services/billing/stripe"
)

var reconcileDesc = billingv1.File_campaignmesh_billing_v1_reconcile_proto.Services().ByName("ReconciliationService")

type env struct {
	store  *postgres.Store
	issuer *meshtest.Issuer
	client billingv1.ReconciliationServiceClient
	rest   *servicetest.REST
	today  time.Time
}

// newEnv serves the ReconciliationService through the platform's server chain over mTLS
// (the gateway's identity calling billing's), credentials checked as auth signs them, over a
// store of its own and the Stripe stand-in; rest calls it through the real gateway handler.
func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	store, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	fake, err := stripestandin.New(stripestandin.Config{APIKey: "sk_test_m", WebhookSecret: "whsec_m"})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(fake)
	t.Cleanup(func() { fake.Close(); hs.Close() })
	sc, err := stripe.New(stripe.Config{BaseURL: hs.URL, APIKey: "sk_test_m"})
	if err != nil {
		t.Fatal(err)
	}
	outbox, err := auditpg.NewOutbox(ctx, store.Pool(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	issuer := meshtest.NewIssuer(t)
	ca := mtlstest.NewCA(t)
	srv := grpcserver.New(grpcserver.WithService("billing"), grpcserver.WithLogger(slog.New(slog.DiscardHandler)),
		grpcserver.WithTLS(mtlstest.Source(t, ca, "billing").ServerConfig()), grpcserver.WithVerifier(issuer.Verifier()),
		grpcserver.WithAuditor(outbox), grpcserver.WithErrorClassifier(pgdb.Classify))
	rep := billing.NewReporter(store, sc, billing.ReporterConfig{})
	billingv1.RegisterReconciliationServiceServer(srv.GRPC(), grpcapi.NewReconcileServer(
		billing.NewReconciler(store, stripe.NewUsage(sc), rep.EventName, nil, nil)))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, lis) }()
	t.Cleanup(func() { cancel(); <-done })
	conn := servicetest.Dial(t, lis.Addr().String(), ca, "gateway", "billing")
	e := &env{store: store, issuer: issuer, client: billingv1.NewReconciliationServiceClient(conn), today: time.Now().UTC().Truncate(24 * time.Hour)}
	e.rest = servicetest.NewREST(t, reconcileDesc, gateway.Backend{Package: "campaignmesh.billing.v1", Conn: conn, RegisterREST: billingv1.RegisterReconciliationServiceHandler})
	return e
}

// restCall calls a GET RPC through the gateway handler with the request's fields as query
// parameters (servicetest.REST sends path parameters only) and returns the answer's code.
func (e *env) restCall(t *testing.T, method string, req proto.Message, token string) codes.Code {
	t.Helper()
	path := map[string]string{"ReconcileUsage": "/v1/usage:reconcile", "ListReconciliations": "/v1/reconciliations"}[method]
	q := url.Values{}
	req.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		q.Set(string(fd.Name()), v.String())
		return true
	})
	hreq, err := http.NewRequest(http.MethodGet, e.rest.URL()+path+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		hreq.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return codes.OK
	}
	var body struct {
		Code *int `json:"code"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Code == nil {
		t.Fatalf("%s over REST: HTTP %d without a JSON error", method, resp.StatusCode)
	}
	return codes.Code(*body.Code)
}

// The authorization matrix: both RPCs × every role of a tenant, the platform operator and no
// credential, for the caller's own tenant and another, over gRPC and REST, the expected code
// derived from the RPC's access rule and the role table.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	day := e.today.Format(time.DateOnly)
	requests := map[string]func(tenant string) proto.Message{
		"ReconcileUsage": func(tn string) proto.Message {
			return &billingv1.ReconcileUsageRequest{StartDay: day, TenantId: tn}
		},
		"ListReconciliations": func(tn string) proto.Message {
			return &billingv1.ListReconciliationsRequest{StartDay: day, TenantId: tn}
		},
	}
	type caller struct {
		name  string
		perms func(string) bool
		token string
	}
	callers := []caller{{"anonymous", nil, ""}}
	for _, r := range rbac.Roles() {
		callers = append(callers, caller{string(r), r.Has, e.issuer.Token(t, "tenant-own", r, "u-"+string(r))})
	}
	for i := 0; i < reconcileDesc.Methods().Len(); i++ {
		md := reconcileDesc.Methods().Get(i)
		name := string(md.Name())
		build, ok := requests[name]
		if !ok {
			t.Errorf("%s has no request in the matrix", name)
			continue
		}
		rule, _ := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule)
		perm := rule.GetPermission()
		if perm == "" {
			t.Fatalf("%s: no permission rule", name)
		}
		for _, c := range callers {
			want := codes.OK
			switch {
			case c.token == "":
				want = codes.Unauthenticated
			case !c.perms(perm):
				want = codes.PermissionDenied
			}
			for _, tn := range []string{"tenant-own", "tenant-foreign"} {
				req := build(tn)
				ctx := context.Background()
				if c.token != "" {
					ctx = meshtest.Bearer(ctx, c.token)
				}
				var err error
				switch r := req.(type) {
				case *billingv1.ReconcileUsageRequest:
					_, err = e.client.ReconcileUsage(ctx, r)
				case *billingv1.ListReconciliationsRequest:
					_, err = e.client.ListReconciliations(ctx, r)
				}
				if got := status.Code(err); got != want {
					t.Errorf("%s as %s for %s over grpc: %v, want %v", name, c.name, tn, err, want)
				}
				if got := e.restCall(t, name, req, c.token); got != want {
					t.Errorf("%s as %s for %s over rest: %v, want %v", name, c.name, tn, got, want)
				}
			}
		}
	}
}

func TestReconcileUsageOverGRPC(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := meshtest.Bearer(context.Background(), e.issuer.Token(t, "", rbac.PlatformOperator, "op"))
	if _, err := e.store.Pool().Exec(context.Background(), `INSERT INTO usage (tenant_id, day, meter, value) VALUES ('t9', $1::date, 'events_accepted', 4)`, e.today.Format(time.DateOnly)); err != nil {
		t.Fatal(err)
	}
	resp, err := e.client.ReconcileUsage(ctx, &billingv1.ReconcileUsageRequest{StartDay: e.today.Format(time.DateOnly)})
	if err != nil || len(resp.GetReconciliations()) != 1 || resp.GetDifferences() != 1 {
		t.Fatalf("reconcile: %v %v", resp, err)
	}
	r := resp.GetReconciliations()[0]
	if r.GetTenantId() != "t9" || r.GetOurs() != 4 || r.Stripe != nil || r.GetExplanation() != billing.ExplainNoCustomer || r.GetDifference() != 4 {
		t.Fatalf("row %v", r)
	}
	for _, bad := range []*billingv1.ReconcileUsageRequest{{StartDay: "yesterday"}, {StartDay: "2026-01-01", EndDay: "2026-06-01"}} {
		if _, err := e.client.ReconcileUsage(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: %v, want INVALID_ARGUMENT", bad, err)
		}
	}
}
