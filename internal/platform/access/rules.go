// Package access enforces the authorization rule that the API definition attaches to every
// RPC (the `campaignmesh.access.v1.rule` method option). An RPC without a rule is denied.
package access

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
)

// MeshIdentities are the services of the mesh: the only names a callers list may hold. A rule
// naming anything else (a test identity, a typo) counts as no rule, so the server refuses to
// start with it and the registry test names it.
var MeshIdentities = []string{"auth", "ingest", "analytics", "campaigns", "delivery", "dsr", "gateway", "billing"}

// Rules maps full method names ("/pkg.Service/Method") to their rule.
type Rules map[string]*accessv1.Rule

// builtin are the rules of infrastructure services that are not ours and so carry no option:
// health checks and reflection answer any verified mesh peer (the TLS layer already checked
// the certificate), and nothing else.
var builtin = map[string]*accessv1.Rule{
	healthpb.Health_Check_FullMethodName:                             public(),
	healthpb.Health_Watch_FullMethodName:                             public(),
	healthpb.Health_List_FullMethodName:                              public(),
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      public(),
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": public(),
}

func public() *accessv1.Rule {
	return &accessv1.Rule{Requirement: &accessv1.Rule_Public{Public: true}}
}

// Internal reports whether fullMethod is internal to the mesh: its rule admits only mesh
// identities. Internal RPCs have no REST mapping and the gateway neither serves nor describes them.
func Internal(fullMethod string) bool { return RuleOf(fullMethod).GetCallers() != nil }

// RuleOf returns the rule declared on fullMethod in the proto registry, or nil.
func RuleOf(fullMethod string) *accessv1.Rule {
	if r, ok := builtin[fullMethod]; ok {
		return r
	}
	if r, ok := known.Load(fullMethod); ok {
		return r.(*accessv1.Rule)
	}
	r := lookupRule(fullMethod)
	if r != nil {
		known.Store(fullMethod, r) // only methods that exist: callers cannot grow it
	}
	return r
}

// known caches the rules found, for the per-call users (the gateway's proxy, request logs).
var known sync.Map // full method → *accessv1.Rule

func lookupRule(fullMethod string) *accessv1.Rule {
	name := strings.ReplaceAll(strings.TrimPrefix(fullMethod, "/"), "/", ".")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil
	}
	md, ok := d.(protoreflect.MethodDescriptor)
	if !ok {
		return nil
	}
	r, _ := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule)
	if !usable(r) {
		return nil
	}
	return r
}

// RulesFor collects the rules of every method served by services (as from
// grpc.Server.GetServiceInfo) and lists the methods that have none, sorted.
func RulesFor(services map[string]grpc.ServiceInfo) (Rules, []string) {
	rules := Rules{}
	var missing []string
	for svc, info := range services {
		for _, m := range info.Methods {
			full := fmt.Sprintf("/%s/%s", svc, m.Name)
			if r := RuleOf(full); r != nil {
				rules[full] = r
			} else {
				missing = append(missing, full)
			}
		}
	}
	sort.Strings(missing)
	return rules, missing
}

// usable reports whether r is a complete rule. An empty callers list allows nobody, and one
// naming a non-mesh identity would let a test certificate in: both count as missing, so the
// server's start-up check reports them.
func usable(r *accessv1.Rule) bool {
	if r == nil || r.GetRequirement() == nil {
		return false
	}
	c, ok := r.GetRequirement().(*accessv1.Rule_Callers)
	if !ok {
		return true
	}
	if len(c.Callers.GetServices()) == 0 {
		return false
	}
	for _, s := range c.Callers.GetServices() {
		if !slices.Contains(MeshIdentities, s) {
			return false
		}
	}
	return true
}
