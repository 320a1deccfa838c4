package grpcapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
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
	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/dsr"
)

var serviceDesc = dsrv1.File_campaignmesh_dsr_v1_service_proto.Services().ByName("DsrService")

// tenantTargeted are the RPCs that name a request: on another tenant's they answer NOT_FOUND.
var tenantTargeted = map[string]bool{
	"GetRequest": true, "CancelRequest": true, "ExtendDeadline": true, "DownloadExport": true, "GetReceipt": true,
}

type env struct {
	dsr    *servicetest.Dsr
	conn   *grpc.ClientConn
	issuer *meshtest.Issuer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	issuer := meshtest.NewIssuer(t)
	d := servicetest.StartDsr(t, servicetest.DsrOptions{Verifier: issuer.Verifier(), Impls: []dsr.Participant{holding{}}})
	return &env{dsr: d, conn: servicetest.Dial(t, d.Addr(), d.CA, "gateway", "dsr"), issuer: issuer}
}

// request makes, through the domain, a request of tenant: completed (the participant finishes
// at once), or held open in suppressing (see holding).
func (e *env) request(t *testing.T, tenant string, kind dsr.Kind, completed bool) string {
	t.Helper()
	p := &authn.Principal{TenantID: tenant, Subject: "seed", Permissions: rbac.PrivacyOfficer.Permissions()}
	value := fmt.Sprint("u-", time.Now().UnixNano())
	if !completed {
		value = holdPrefix + value // the participant holds it in suppressing: it stays open
	}
	r, err := e.dsr.Service().CreateRequest(context.Background(), p, dsr.CreateInput{Kind: kind, Regulation: dsr.GDPR,
		Subject: []dsr.Identifier{{Kind: dsr.UserID, Value: value}}})
	if err != nil {
		t.Fatal(err)
	}
	if completed {
		meshtest.Eventually(t, 20*time.Second, func() bool {
			cur, err := e.dsr.Service().GetRequest(context.Background(), p, r.ID)
			return err == nil && cur.State == dsr.Completed
		}, "request %s completes", r.ID)
	}
	return r.ID
}

// invoke calls method with req as token and returns the code; a server stream is read to its
// end.
func (e *env) invoke(t *testing.T, method string, req proto.Message, token string) codes.Code {
	ctx := context.Background()
	if token != "" {
		ctx = meshtest.Bearer(ctx, token)
	}
	full := "/campaignmesh.dsr.v1.DsrService/" + method
	md := serviceDesc.Methods().ByName(protoreflect.Name(method))
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		t.Fatal(err)
	}
	if !md.IsStreamingServer() {
		return status.Code(e.conn.Invoke(ctx, full, req, mt.New().Interface()))
	}
	stream, err := e.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, full)
	if err != nil {
		return status.Code(err)
	}
	if err := stream.SendMsg(req); err != nil {
		return status.Code(err)
	}
	_ = stream.CloseSend()
	for {
		err := stream.RecvMsg(mt.New().Interface())
		if errors.Is(err, io.EOF) {
			return codes.OK
		}
		if err != nil {
			return status.Code(err)
		}
	}
}

// The authorization and tenant isolation matrix through the real interceptor chain over mTLS,
// over gRPC and over REST through the real gateway handler:
// every RPC × every role (and no credential) × a request of the caller's own or another
// tenant, the expected code derived from the RPC's access rule and the role table.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	own, foreign := "tenant-own", "tenant-foreign"
	receipts := map[string]*dsrv1.Receipt{}
	for _, tn := range []string{own, foreign} {
		id := e.request(t, tn, dsr.KindAccess, true)
		rc, err := e.dsr.Service().GetReceipt(context.Background(), &authn.Principal{TenantID: tn}, id)
		if err != nil {
			t.Fatal(err)
		}
		receipts[tn] = &dsrv1.Receipt{Payload: rc.Payload, Signature: rc.Signature, KeyId: rc.KeyID}
	}
	requests := map[string]func(tenant string) proto.Message{
		"CreateRequest": func(string) proto.Message {
			return &dsrv1.CreateRequestRequest{Request: &dsrv1.Request{Kind: dsrv1.Kind_KIND_SUPPRESS, Regulation: dsrv1.Regulation_REGULATION_GDPR,
				Subject: []*dsrv1.Identifier{{Kind: dsrv1.Identifier_KIND_USER_ID, Value: "m"}}}}
		},
		"GetRequest": func(tn string) proto.Message {
			return &dsrv1.GetRequestRequest{Id: e.request(t, tn, dsr.KindAccess, false)}
		},
		"ListRequests": func(string) proto.Message { return &dsrv1.ListRequestsRequest{} },
		"CancelRequest": func(tn string) proto.Message {
			return &dsrv1.CancelRequestRequest{Id: e.request(t, tn, dsr.KindAccess, false)}
		},
		"ExtendDeadline": func(tn string) proto.Message {
			return &dsrv1.ExtendDeadlineRequest{Id: e.request(t, tn, dsr.KindAccess, false), Days: 5, Reason: "r"}
		},
		"DownloadExport": func(tn string) proto.Message {
			return &dsrv1.DownloadExportRequest{Id: e.request(t, tn, dsr.KindAccess, true)}
		},
		"GetReceipt": func(tn string) proto.Message {
			return &dsrv1.GetReceiptRequest{Id: e.request(t, tn, dsr.KindAccess, true)}
		},
		"ListReceiptKeys":  func(string) proto.Message { return &dsrv1.ListReceiptKeysRequest{} },
		"VerifyReceipt":    func(tn string) proto.Message { return &dsrv1.VerifyReceiptRequest{Receipt: receipts[tn]} },
		"ListSuppressions": func(string) proto.Message { return &dsrv1.ListSuppressionsRequest{} },
		"GetSuppression": func(tn string) proto.Message {
			return &dsrv1.GetSuppressionRequest{Value: "m"}
		},
		"GetPrivacyPolicy": func(string) proto.Message { return &dsrv1.GetPrivacyPolicyRequest{} },
		"UpdatePrivacyPolicy": func(string) proto.Message {
			return &dsrv1.UpdatePrivacyPolicyRequest{Policy: &dsrv1.PrivacyPolicy{RetentionDays: 30}}
		},
	}
	type caller struct {
		name string
		role rbac.Role
	}
	callers := []caller{{"admin", rbac.Admin}, {"manager", rbac.Manager}, {"analyst", rbac.Analyst}, {"viewer", rbac.Viewer},
		{"privacy officer", rbac.PrivacyOfficer}, {"platform operator", rbac.PlatformOperator}, {"anonymous", ""}}
	// A suppression of "m" exists in the own tenant, so GetSuppression finds it there.
	e.request(t, own, dsr.KindSuppress, false)
	_, _ = e.dsr.Service().CreateRequest(context.Background(), &authn.Principal{TenantID: own, Subject: "seed"},
		dsr.CreateInput{Kind: dsr.KindSuppress, Regulation: dsr.GDPR, Subject: []dsr.Identifier{{Kind: dsr.UserID, Value: "m"}}})
	rest := servicetest.NewREST(t, serviceDesc, gateway.Backend{Package: "campaignmesh.dsr.v1", Conn: e.conn, RegisterREST: dsrv1.RegisterDsrServiceHandler})
	transports := map[string]func(method string, req proto.Message, token string) codes.Code{
		"gRPC": func(method string, req proto.Message, token string) codes.Code {
			return e.invoke(t, method, req, token)
		},
		"REST": rest.Call,
	}
	for i := 0; i < serviceDesc.Methods().Len(); i++ {
		md := serviceDesc.Methods().Get(i)
		name := string(md.Name())
		build, ok := requests[name]
		if !ok {
			t.Errorf("%s has no request in the matrix", name)
			continue
		}
		rule, _ := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule)
		for _, c := range callers {
			token := ""
			if c.role != "" {
				tenant := own
				if c.role == rbac.PlatformOperator {
					tenant = ""
				}
				token = e.issuer.Token(t, tenant, c.role, "user-"+string(c.role))
			}
			for _, target := range []struct {
				tenant  string
				foreign bool
			}{{own, false}, {foreign, true}} {
				want := expected(name, rule, c.role, target.foreign)
				for tname, call := range transports {
					if got := call(name, build(target.tenant), token); got != want {
						t.Errorf("%s as %s on the %s tenant over %s: %v, want %v", name, c.name, target.tenant, tname, got, want)
					}
				}
			}
		}
	}
}

func expected(method string, rule *accessv1.Rule, role rbac.Role, foreign bool) codes.Code {
	if rule.GetPublic() {
		return codes.OK
	}
	req, ok := rule.GetRequirement().(*accessv1.Rule_Permission)
	switch {
	case !ok:
		return codes.Unknown
	case role == "":
		return codes.Unauthenticated
	case !role.Has(req.Permission):
		return codes.PermissionDenied
	case foreign && tenantTargeted[method]:
		return codes.NotFound
	}
	return codes.OK
}

// holdPrefix marks the subjects the holding participant never resolves.
const holdPrefix = "hold-"

// holding is the matrix's participant: it finishes every call at once, except that it holds the
// resolution of a subject named holdPrefix… until the call's context ends, so a request meant to
// stay open (to be cancelled or extended) cannot complete under the test.
type holding struct{}

func (holding) Name() string { return "holding" }

func (holding) Resolve(ctx context.Context, _, _ string, ids []dsr.Identifier) ([]dsr.Identifier, error) {
	for _, id := range ids {
		if strings.HasPrefix(id.Value, holdPrefix) {
			<-ctx.Done()
			return nil, ctx.Err()
		}
	}
	return nil, nil
}

func (holding) Export(context.Context, string, string, []dsr.Identifier, func(string, []byte) error) error {
	return nil
}

func (holding) StartErasure(context.Context, string, string, []dsr.Identifier) (dsr.ErasureStatus, error) {
	return dsr.ErasureStatus{Done: true}, nil
}

func (holding) GetErasure(context.Context, string, string) (dsr.ErasureStatus, error) {
	return dsr.ErasureStatus{Done: true}, nil
}
