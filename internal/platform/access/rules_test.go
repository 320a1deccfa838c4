package access_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	// Every service package of the mesh, so its descriptors are in the registry.
	_ "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	_ "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	_ "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	_ "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	_ "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	_ "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	_ "github.com/campaignmesh/campaignmesh/gen/campaignmesh/meshtest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/access"
)

// meshMethods walks the proto registry for every RPC of every campaignmesh.* service.
func meshMethods(t *testing.T) []protoreflect.MethodDescriptor {
	t.Helper()
	var methods []protoreflect.MethodDescriptor
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if !strings.HasPrefix(string(fd.Package()), "campaignmesh.") {
			return true
		}
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				methods = append(methods, sd.Methods().Get(j))
			}
		}
		return true
	})
	if len(methods) < 10 {
		t.Fatalf("found only %d RPCs; are the service packages imported?", len(methods))
	}
	return methods
}

func fullMethod(md protoreflect.MethodDescriptor) string {
	return "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
}

func TestEveryRPCHasAnAccessRule(t *testing.T) {
	for _, md := range meshMethods(t) {
		if access.RuleOf(fullMethod(md)) == nil {
			t.Errorf("%s has no (campaignmesh.access.v1.rule): it would be denied to everyone", fullMethod(md))
		}
	}
}

// Public RPCs have a REST mapping; internal ones (callers rules) have none, so the edge can
// neither route nor describe them.
func TestOnlyPublicRPCsHaveARESTMapping(t *testing.T) {
	internal := 0
	for _, md := range meshMethods(t) {
		if strings.HasPrefix(string(md.FullName()), "campaignmesh.meshtest.") {
			continue // test-only service, never exposed
		}
		rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
		mapped := rule != nil && rule.GetPattern() != nil
		switch {
		case access.Internal(fullMethod(md)) && mapped:
			t.Errorf("%s is internal but has a google.api.http mapping", fullMethod(md))
		case access.Internal(fullMethod(md)):
			internal++
		case !mapped && md.IsStreamingClient():
			// A public client stream (ImportContacts) cannot be a grpc-gateway route: a plain
			// gateway handler serves it, which gateway's TestEveryPublicRPCReachesItsBackend
			// requires and calls.
		case !mapped:
			t.Errorf("%s has no google.api.http mapping", fullMethod(md))
		}
	}
	if internal < 4 {
		t.Errorf("found %d internal RPCs, want at least 4 (VerifyApiKey, AppendAuditRecords, ListRevocations, GetCampaignSpend, DeleteEvents)", internal)
	}
}

// Test identities never reach production rules: every callers list names mesh services only.
func TestCallersListsNameOnlyMeshIdentities(t *testing.T) {
	for _, md := range meshMethods(t) {
		r, _ := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule)
		for _, s := range r.GetCallers().GetServices() {
			if !slices.Contains(access.MeshIdentities, s) {
				t.Errorf("%s admits %q, which is not a mesh identity %v", fullMethod(md), s, access.MeshIdentities)
			}
		}
	}
}

func TestRulesForReportsMethodsWithoutRule(t *testing.T) {
	_, missing := access.RulesFor(map[string]grpc.ServiceInfo{
		"campaignmesh.auth.v1.AuthService": {Methods: []grpc.MethodInfo{{Name: "Login"}, {Name: "NotInTheProto"}}},
		"unknown.v1.Service":               {Methods: []grpc.MethodInfo{{Name: "Do"}}},
	})
	want := []string{"/campaignmesh.auth.v1.AuthService/NotInTheProto", "/unknown.v1.Service/Do"}
	if strings.Join(missing, ",") != strings.Join(want, ",") {
		t.Fatalf("missing = %v, want %v", missing, want)
	}
}
