package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/campaignmesh/campaignmesh/internal/platform/access"
)

// restTarget is the method and path of an RPC's google.api.http rule, its path parameters
// filled with "x1".
func restTarget(rule *annotations.HttpRule) (method, path string) {
	switch p := rule.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		method, path = http.MethodGet, p.Get
	case *annotations.HttpRule_Post:
		method, path = http.MethodPost, p.Post
	case *annotations.HttpRule_Patch:
		method, path = http.MethodPatch, p.Patch
	case *annotations.HttpRule_Put:
		method, path = http.MethodPut, p.Put
	case *annotations.HttpRule_Delete:
		method, path = http.MethodDelete, p.Delete
	}
	return method, regexp.MustCompile(`\{[^}]+\}`).ReplaceAllString(path, "x1")
}

// Every public RPC of every service behind the gateway (dsr's included) has a REST mapping,
// and reaches its backend's handler over REST and over the gRPC proxy; server-streaming
// RPCs (dsr's export download, analytics' live metrics) too.
func TestEveryPublicRPCReachesItsBackend(t *testing.T) {
	mesh := startEchoMesh(t)
	g, err := New(context.Background(), Config{RateLimit: 1 << 20}, mesh.backends)
	if err != nil {
		t.Fatal(err)
	}
	conn := edgeConn(t, g)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer any")
	seen := map[string]bool{}
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if !ownedByBackend(string(fd.Package()), mesh.backends) {
			return true
		}
		seen[string(fd.Package())] = true
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				md := sd.Methods().Get(j)
				full := "/" + string(sd.FullName()) + "/" + string(md.Name())
				if access.Internal(full) {
					continue // the edge refuses these (public_test.go)
				}
				rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
				verb, path := restTarget(rule)
				if plain, ok := plainRoutes[full]; ok {
					verb, path = http.MethodPost, plain // a client stream, served by a plain handler
				}
				if verb == "" {
					t.Errorf("%s is public but has no google.api.http rule", full)
					continue
				}
				before := mesh.calls(full)
				if w := restCallAs(t, g, verb, path, "{}", plainContentType(full)); w.Code != http.StatusOK || mesh.calls(full) != before+1 {
					t.Errorf("%s over REST (%s %s): %d %s, backend calls %d→%d", full, verb, path, w.Code, w.Body, before, mesh.calls(full))
				}
				before = mesh.calls(full)
				if err := callThroughEdge(ctx, conn, md, full); err != nil || mesh.calls(full) != before+1 {
					t.Errorf("%s over gRPC: %v, backend calls %d→%d", full, err, before, mesh.calls(full))
				}
			}
		}
		return true
	})
	for _, pkg := range []string{"campaignmesh.auth.v1", "campaignmesh.ingest.v1", "campaignmesh.campaigns.v1", "campaignmesh.analytics.v1", "campaignmesh.dsr.v1", "campaignmesh.delivery.v1",
		"campaignmesh.billing.v1"} {
		if !seen[pkg] {
			t.Errorf("no RPC of %s checked", pkg)
		}
	}
}

// callThroughEdge sends one empty request of md's type through the gRPC proxy and reads the
// answer to its end.
func callThroughEdge(ctx context.Context, conn *grpc.ClientConn, md protoreflect.MethodDescriptor, full string) error {
	in, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	if err != nil {
		return err
	}
	out, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return err
	}
	if !md.IsStreamingClient() && !md.IsStreamingServer() {
		return conn.Invoke(ctx, full, in.New().Interface(), out.New().Interface())
	}
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: md.IsStreamingServer(), ClientStreams: md.IsStreamingClient()}, full)
	if err != nil {
		return err
	}
	if err := s.SendMsg(in.New().Interface()); err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	for {
		if err := s.RecvMsg(out.New().Interface()); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// plainRoutes are the RPCs that a plain gateway handler serves over REST (client streams).
var plainRoutes = map[string]string{
	"/campaignmesh.delivery.v1.DeliveryService/ImportContacts": contactsImportPath,
}

// plainContentType is the body type a route takes.
func plainContentType(full string) string {
	if _, ok := plainRoutes[full]; ok {
		return "text/csv"
	}
	return "application/json"
}
