package grpcapi_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/campaignmesh/campaignmesh/gateway"
	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/access"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/billing"
	"github.com/campaignmesh/campaignmesh/services/billing/grpcapi"
	"github.com/campaignmesh/campaignmesh/services/billing/postgres"
	"github.com/campaignmesh/campaignmesh/services/billing/stripe"
)

var accountService = billingv1.File_campaignmesh_billing_v1_accounts_proto.Services().ByName("BillingAccountService")

const (
	ownTenant     = "00000000-0000-4000-8000-0000000000a1"
	foreignTenant = "00000000-0000-4000-8000-0000000000b2"
	webhookSecret = "whsec_matrix"
)

// accountEnv is the account server behind the real interceptor chain over real mTLS, on its
// own database.
type accountEnv struct {
	store  *postgres.Store
	ca     *mtls.CA
	addr   string
	issuer *meshtest.Issuer
	conn   *grpc.ClientConn // as the gateway
}

func newAccountEnv(t *testing.T) *accountEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	store, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	outbox, err := auditpg.NewOutbox(ctx, store.Pool(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &accountEnv{store: store, ca: mtlstest.NewCA(t), issuer: meshtest.NewIssuer(t)}
	v, err := stripe.NewVerifier([]byte(webhookSecret))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpcserver.New(grpcserver.WithService("billing"), grpcserver.WithTLS(mtlstest.Source(t, e.ca, "billing").ServerConfig()),
		grpcserver.WithVerifier(e.issuer.Verifier()), grpcserver.WithAuditor(outbox), grpcserver.WithErrorClassifier(pgdb.Classify))
	billingv1.RegisterBillingAccountServiceServer(srv.GRPC(), grpcapi.NewAccountServer(billing.NewAccounts(store, nil), billing.NewWebhooks(v, store, nil)))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		store.Close()
	})
	e.addr = lis.Addr().String()
	e.conn = servicetest.Dial(t, e.addr, e.ca, "gateway", "billing")
	op := &authn.Principal{Subject: "op", Role: rbac.PlatformOperator, Permissions: rbac.PlatformOperator.Permissions()}
	for tenant, cus := range map[string]string{ownTenant: "cus_own", foreignTenant: "cus_foreign"} {
		if _, err := billing.NewAccounts(store, nil).SetBillingAccount(ctx, op, tenant, cus); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *accountEnv) token(t *testing.T, role rbac.Role) string {
	tenant := ownTenant
	if !role.TenantScoped() {
		tenant = ""
	}
	return e.issuer.Token(t, tenant, role, "u-"+string(role))
}

func invoke(t *testing.T, conn *grpc.ClientConn, method string, req proto.Message, token string) codes.Code {
	t.Helper()
	md := accountService.Methods().ByName(protoreflect.Name(method))
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if token != "" {
		ctx = meshtest.Bearer(ctx, token)
	}
	return status.Code(conn.Invoke(ctx, "/campaignmesh.billing.v1.BillingAccountService/"+method, req, mt.New().Interface()))
}

// The authorization and tenant isolation matrix through the real chain over mTLS, over gRPC
// and over REST through the real gateway handler: every RPC × every role × the caller's own or
// another tenant, the expected code derived from the RPC's rule and the role table.
func TestAccountAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	e := newAccountEnv(t)
	tenantOf := map[bool]string{false: ownTenant, true: foreignTenant}
	customerOf := map[bool]string{false: "cus_own", true: "cus_foreign"}
	requests := map[string]func(foreign bool) proto.Message{
		"SetBillingAccount": func(f bool) proto.Message {
			return &billingv1.SetBillingAccountRequest{TenantId: tenantOf[f], StripeCustomerId: customerOf[f]}
		},
		"GetBillingAccount":   func(f bool) proto.Message { return &billingv1.GetBillingAccountRequest{TenantId: tenantOf[f]} },
		"ListBillingAccounts": func(bool) proto.Message { return &billingv1.ListBillingAccountsRequest{} },
		"HandleStripeWebhook": func(bool) proto.Message {
			return &billingv1.HandleStripeWebhookRequest{Payload: []byte(`{}`), Signature: "t=1,v1=00"}
		},
	}
	rest := servicetest.NewREST(t, accountService, gateway.Backend{Package: "campaignmesh.billing.v1", Conn: e.conn, RegisterREST: billingv1.RegisterBillingAccountServiceHandler})
	for i := 0; i < accountService.Methods().Len(); i++ {
		md := accountService.Methods().Get(i)
		name := string(md.Name())
		build, ok := requests[name]
		if !ok {
			t.Errorf("%s has no request in the matrix", name)
			continue
		}
		rule, _ := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule)
		for _, role := range rbac.Roles() {
			for _, foreign := range []bool{false, true} {
				want := codes.Unknown
				switch req := rule.GetRequirement().(type) {
				case *accessv1.Rule_Callers:
					want = codes.PermissionDenied // users come through the gateway, not as a mesh caller
				case *accessv1.Rule_Permission:
					switch {
					case !role.Has(req.Permission):
						want = codes.PermissionDenied
					case foreign && role.TenantScoped():
						want = codes.NotFound
					default:
						want = codes.OK
					}
				}
				token := e.token(t, role)
				if got := invoke(t, e.conn, name, build(foreign), token); got != want {
					t.Errorf("%s as %s (foreign %v) over gRPC: %v, want %v", name, role, foreign, got, want)
				}
				if rule.GetCallers() != nil {
					continue // internal: no REST route
				}
				if got := rest.Call(name, build(foreign), token); got != want {
					t.Errorf("%s as %s (foreign %v) over REST: %v, want %v", name, role, foreign, got, want)
				}
			}
		}
		if rule.GetCallers() == nil {
			if got := invoke(t, e.conn, name, build(false), ""); got != codes.Unauthenticated {
				t.Errorf("%s without a credential: %v", name, got)
			}
		}
	}
}

// Only the gateway relays Stripe's webhooks; a bad signature is INVALID_ARGUMENT, a good one
// OK (and OK again when repeated).
func TestHandleStripeWebhookCallers(t *testing.T) {
	t.Parallel()
	e := newAccountEnv(t)
	body := []byte(`{"id":"evt_c","type":"invoice.payment_failed","created":` + strconv.FormatInt(time.Now().Add(-time.Minute).Unix(), 10) + `,"data":{"object":{"id":"in_1","customer":"cus_own","attempt_count":1}}}`)
	good := &billingv1.HandleStripeWebhookRequest{Payload: body, Signature: stripe.Sign([]byte(webhookSecret), body, time.Now())}
	for _, svc := range access.MeshIdentities {
		want := codes.PermissionDenied
		if svc == "gateway" {
			want = codes.OK
		}
		conn := servicetest.Dial(t, e.addr, e.ca, svc, "billing")
		if got := invoke(t, conn, "HandleStripeWebhook", good, ""); got != want {
			t.Errorf("as %s: %v, want %v", svc, got, want)
		}
	}
	if got := invoke(t, e.conn, "HandleStripeWebhook", good, ""); got != codes.OK {
		t.Errorf("repeated delivery: %v", got)
	}
	bad := &billingv1.HandleStripeWebhookRequest{Payload: body, Signature: stripe.Sign([]byte("whsec_forged"), body, time.Now())}
	if got := invoke(t, e.conn, "HandleStripeWebhook", bad, ""); got != codes.InvalidArgument {
		t.Errorf("bad signature: %v", got)
	}
	acc, err := e.store.GetBillingAccount(context.Background(), ownTenant)
	if err != nil || acc.Status != billing.AccountFlagged || acc.Revision != 2 {
		t.Fatalf("account after one good delivery (repeated): %+v, %v", acc, err)
	}
}
