package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// allowAll takes any bearer credential as a tenant admin holding every permission, so that
// requests get through the backends' access stage to their validation.
type allowAll struct{}

func (allowAll) Verify(context.Context, string) (*authn.Principal, error) {
	return &authn.Principal{TenantID: "t1", Subject: "u1", Role: rbac.Admin, Permissions: rbac.AllPermissions(), Kind: authn.KindAccessToken}, nil
}

// echoMesh runs every service behind the gateway as a real grpcserver (the platform's whole
// interceptor chain) whose handlers answer an empty response of the right type.
type echoMesh struct {
	backends []Backend
	mu       sync.Mutex
	// header, when set, is sent by every handler as response header metadata.
	header metadata.MD
	// fail, when set, is what every handler answers.
	fail error
	// seen is the incoming metadata of the last call.
	seen metadata.MD
	// methods counts the calls that reached a handler, by full method name.
	methods map[string]int
}

func (m *echoMesh) setFail(err error) { m.mu.Lock(); m.fail = err; m.mu.Unlock() }

func (m *echoMesh) setHeader(md metadata.MD) { m.mu.Lock(); m.header = md; m.mu.Unlock() }

func (m *echoMesh) lastMetadata() metadata.MD { m.mu.Lock(); defer m.mu.Unlock(); return m.seen }

// calls is how many calls of fullMethod reached its handler.
func (m *echoMesh) calls(fullMethod string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.methods[fullMethod]
}

func (m *echoMesh) called(ctx context.Context) error {
	in, _ := metadata.FromIncomingContext(ctx)
	method, _ := grpc.Method(ctx)
	m.mu.Lock()
	m.seen = in
	m.methods[method]++
	hdr, fail := m.header, m.fail
	m.mu.Unlock()
	if hdr != nil {
		if err := grpc.SetHeader(ctx, hdr); err != nil {
			return err
		}
	}
	return fail
}

func startEchoMesh(tb testing.TB) *echoMesh {
	tb.Helper()
	m := &echoMesh{methods: map[string]int{}}
	sink := natstest.AuditSink(tb, "backends")
	for _, svc := range []struct {
		pkg  string
		desc *grpc.ServiceDesc
		rest func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error
		// more are the package's other services, served by the same backend.
		more []*grpc.ServiceDesc
	}{
		{"campaignmesh.auth.v1", &authv1.AuthService_ServiceDesc, authv1.RegisterAuthServiceHandler, nil},
		{"campaignmesh.ingest.v1", &ingestv1.IngestService_ServiceDesc, ingestv1.RegisterIngestServiceHandler, nil},
		{"campaignmesh.campaigns.v1", &campaignsv1.CampaignService_ServiceDesc, campaignsv1.RegisterCampaignServiceHandler, nil},
		{"campaignmesh.analytics.v1", &analyticsv1.AnalyticsService_ServiceDesc, analyticsv1.RegisterAnalyticsServiceHandler, nil},
		{"campaignmesh.dsr.v1", &dsrv1.DsrService_ServiceDesc, dsrv1.RegisterDsrServiceHandler, nil},
		{"campaignmesh.delivery.v1", &deliveryv1.DeliveryService_ServiceDesc, func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
			if err := deliveryv1.RegisterDeliveryServiceHandler(ctx, mux, conn); err != nil {
				return err
			}
			if err := deliveryv1.RegisterSendingServiceHandler(ctx, mux, conn); err != nil {
				return err
			}
			return deliveryv1.RegisterMessagesServiceHandler(ctx, mux, conn)
		}, []*grpc.ServiceDesc{&deliveryv1.SendingService_ServiceDesc, &deliveryv1.MessagesService_ServiceDesc}},
		{"campaignmesh.billing.v1", &billingv1.BillingService_ServiceDesc, func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
			for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{billingv1.RegisterBillingServiceHandler,
				billingv1.RegisterBillingAccountServiceHandler, billingv1.RegisterReconciliationServiceHandler} {
				if err := register(ctx, mux, conn); err != nil {
					return err
				}
			}
			return nil
		}, []*grpc.ServiceDesc{&billingv1.BillingAccountService_ServiceDesc, &billingv1.ReconciliationService_ServiceDesc}},
	} {
		srv := grpcserver.New(grpcserver.WithVerifier(allowAll{}), grpcserver.WithLogger(slog.New(slog.DiscardHandler)), grpcserver.WithAuditor(sink))
		srv.GRPC().RegisterService(m.echoDesc(tb, svc.desc), struct{}{})
		for _, d := range svc.more {
			srv.GRPC().RegisterService(m.echoDesc(tb, d), struct{}{})
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx, lis) }()
		tb.Cleanup(func() { cancel(); <-done })
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { conn.Close() })
		m.backends = append(m.backends, Backend{Package: svc.pkg, Conn: conn, RegisterREST: svc.rest})
	}
	return m
}

// echoDesc copies a generated service description with handlers that decode the request,
// pass it through the interceptors and answer an empty response.
func (m *echoMesh) echoDesc(tb testing.TB, gen *grpc.ServiceDesc) *grpc.ServiceDesc {
	tb.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(gen.ServiceName))
	if err != nil {
		tb.Fatal(err)
	}
	sd := d.(protoreflect.ServiceDescriptor)
	newMsg := func(name protoreflect.FullName) proto.Message {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(name)
		if err != nil {
			tb.Fatal(err)
		}
		return mt.New().Interface()
	}
	out := &grpc.ServiceDesc{ServiceName: gen.ServiceName, HandlerType: (*any)(nil), Metadata: gen.Metadata}
	for _, gm := range gen.Methods {
		md := sd.Methods().ByName(protoreflect.Name(gm.MethodName))
		in, outName, full := md.Input().FullName(), md.Output().FullName(), "/"+gen.ServiceName+"/"+gm.MethodName
		out.Methods = append(out.Methods, grpc.MethodDesc{MethodName: gm.MethodName,
			Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				req := newMsg(in)
				if err := dec(req); err != nil {
					return nil, err
				}
				h := func(ctx context.Context, _ any) (any, error) { return newMsg(outName), m.called(ctx) }
				return icpt(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: full}, h)
			}})
	}
	for _, gs := range gen.Streams {
		md := sd.Methods().ByName(protoreflect.Name(gs.StreamName))
		in, outName, unaryOut := md.Input().FullName(), md.Output().FullName(), !md.IsStreamingServer()
		gs.Handler = func(_ any, ss grpc.ServerStream) error {
			if err := m.called(ss.Context()); err != nil {
				return err
			}
			for {
				if err := ss.RecvMsg(newMsg(in)); err != nil {
					if errors.Is(err, io.EOF) {
						if unaryOut { // a client stream answers one message
							return ss.SendMsg(newMsg(outName))
						}
						return nil
					}
					return err
				}
			}
		}
		out.Streams = append(out.Streams, gs)
	}
	return out
}
