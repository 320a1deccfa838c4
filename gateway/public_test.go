package gateway

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/gen/openapi"
)

// internalRPCs are the mesh-only RPCs of the backends used here.
var internalRPCs = []string{
	authv1.AuthService_VerifyApiKey_FullMethodName,
	authv1.AuthService_AppendAuditRecords_FullMethodName,
	authv1.AuthService_ListRevocations_FullMethodName,
	analyticsv1.AnalyticsService_GetCampaignSpend_FullMethodName,
	analyticsv1.AnalyticsService_DeleteEvents_FullMethodName,
	dsrv1.ParticipantService_ResolveSubject_FullMethodName,
	dsrv1.ParticipantService_ExportSubject_FullMethodName,
	dsrv1.ParticipantService_StartErasure_FullMethodName,
	dsrv1.ParticipantService_GetErasure_FullMethodName,
}

// edgeWithBackends serves a gateway for auth, analytics and dsr over TLS (HTTP/2) and returns a gRPC
// connection to it (edgeConn). The backends' connections lead to a closed port: a call the gateway
// forwarded would fail UNAVAILABLE, one it refused fails UNIMPLEMENTED.
func edgeWithBackends(t *testing.T) (*Gateway, *grpc.ClientConn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	backend, err := grpc.NewClient(dead, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	g, err := New(context.Background(), Config{}, []Backend{
		{Package: "campaignmesh.auth.v1", Conn: backend, RegisterREST: authv1.RegisterAuthServiceHandler},
		{Package: "campaignmesh.analytics.v1", Conn: backend, RegisterREST: analyticsv1.RegisterAnalyticsServiceHandler},
		{Package: "campaignmesh.dsr.v1", Conn: backend, RegisterREST: dsrv1.RegisterDsrServiceHandler},
	})
	if err != nil {
		t.Fatal(err)
	}
	return g, edgeConn(t, g)
}

func TestEdgeNeitherServesNorDescribesInternalRPCs(t *testing.T) {
	g, conn := edgeWithBackends(t)
	ctx := context.Background()

	// The gRPC proxy refuses them before any backend is asked.
	for _, m := range internalRPCs {
		err := conn.Invoke(ctx, m, &authv1.VerifyApiKeyRequest{}, &authv1.VerifyApiKeyResponse{})
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("%s through the edge: %v, want Unimplemented", m, err)
		}
	}
	// A public one is forwarded (and fails only because the backend is down).
	if err := conn.Invoke(ctx, authv1.AuthService_Login_FullMethodName, &authv1.LoginRequest{}, &authv1.LoginResponse{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("Login through the edge: %v, want Unavailable from the dead backend", err)
	}

	// Reflection describes the services without their internal methods, and knows no internal symbol.
	stream, err := reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *reflectionv1.ServerReflectionRequest) *reflectionv1.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for _, svc := range []string{"campaignmesh.auth.v1.AuthService", "campaignmesh.analytics.v1.AnalyticsService", "campaignmesh.dsr.v1.DsrService"} {
		resp := ask(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: svc}})
		files := resp.GetFileDescriptorResponse().GetFileDescriptorProto()
		if len(files) == 0 {
			t.Fatalf("no descriptor for %s: %v", svc, resp.GetErrorResponse())
		}
		var methods []string
		for _, raw := range files {
			fd := &descriptorpb.FileDescriptorProto{}
			if err := proto.Unmarshal(raw, fd); err != nil {
				t.Fatal(err)
			}
			for _, sd := range fd.GetService() {
				for _, md := range sd.GetMethod() {
					methods = append(methods, "/"+fd.GetPackage()+"."+sd.GetName()+"/"+md.GetName())
				}
			}
		}
		all := strings.Join(methods, " ")
		if !strings.Contains(all, "/GetCampaignSummary") && !strings.Contains(all, "/Login") && !strings.Contains(all, "/CreateRequest") {
			t.Fatalf("%s described without its public methods: %v", svc, methods)
		}
		for _, m := range internalRPCs {
			if strings.Contains(all, m) {
				t.Errorf("reflection describes internal %s", m)
			}
		}
	}
	// The service list (grpcurl list) names DsrService, not the internal ParticipantService.
	list := ask(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}})
	var names []string
	for _, s := range list.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !slices.Contains(names, "campaignmesh.dsr.v1.DsrService") || slices.Contains(names, "campaignmesh.dsr.v1.ParticipantService") {
		t.Errorf("reflection lists %v; want DsrService and no ParticipantService", names)
	}
	for _, m := range internalRPCs {
		symbol := strings.ReplaceAll(strings.TrimPrefix(m, "/"), "/", ".")
		resp := ask(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol}})
		if resp.GetErrorResponse() == nil {
			t.Errorf("reflection resolves internal symbol %s", symbol)
		}
	}

	// REST has no route to them, and the OpenAPI document does not mention them.
	for _, path := range []string{"/v1/internal/apikeys:verify", "/v1/internal/audit:append", "/v1/internal/analytics/events:delete"} {
		w := httptest.NewRecorder()
		g.ServeHTTP(w, httptest.NewRequest(http.MethodPost, path, strings.NewReader("{}")))
		if w.Code != http.StatusNotFound {
			t.Errorf("POST %s: %d, want 404", path, w.Code)
		}
	}
	doc := string(openapi.Document)
	for _, m := range internalRPCs {
		name := m[strings.LastIndex(m, "/")+1:]
		if strings.Contains(doc, "_"+name+`"`) || strings.Contains(doc, "/internal/") {
			t.Errorf("openapi.json describes %s", m)
		}
	}
}
