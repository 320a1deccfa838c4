package k8stest

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// Infra is every path from a process to infrastructure, which no proto file states: who talks
// to PostgreSQL, NATS, ClickHouse and Tempo, on which port. Changing who uses what starts here.
var Infra = []struct {
	From, To string
	Port     int
}{
	{"auth", "postgres", 5432},
	{"campaigns", "postgres", 5432},
	{"dsr", "postgres", 5432},
	{"delivery", "postgres", 5432},
	{"billing", "postgres", 5432},
	{"gateway", "nats", 4222}, // the audit stream
	{"ingest", "nats", 4222},
	{"analytics", "nats", 4222},
	{"analytics-writer", "nats", 4222},
	{"dsr", "nats", 4222},
	{"delivery", "nats", 4222}, // identify events → contacts (issue 17)
	{"billing", "nats", 4222},  // metering consumers (EVENTS, USAGE) and the QUOTAS bucket (issue 18)
	{"analytics", "clickhouse", 9000},
	{"analytics-writer", "clickhouse", 9000},
	// Spans (OTLP gRPC) from every process.
	{"gateway", "tempo", 4317},
	{"auth", "tempo", 4317},
	{"ingest", "tempo", 4317},
	{"campaigns", "tempo", 4317},
	{"analytics", "tempo", 4317},
	{"analytics-writer", "tempo", 4317},
	{"dsr", "tempo", 4317},
	{"delivery", "tempo", 4317},
	{"billing", "tempo", 4317},
}

// Outside are the paths from a process to services outside the cluster that no in-cluster
// policy can admit (egress only), named as the policies' campaignmesh.io/peer label names them.
var Outside = []struct {
	From, To string
	Port     int
}{
	{"delivery", "providers", 443}, // the email/SMS providers' HTTPS APIs (SendGrid, Twilio)
	{"billing", "stripe", 443},     // Stripe's HTTPS API (meter events, meters, customers)
}

// External callers from outside the namespace, as the policies name them: the edge (any
// source), Prometheus (namespace monitoring) and the KEDA operator (namespace keda).
const (
	Edge       = "edge"
	Monitoring = "monitoring"
	KEDA       = "keda"
)

// Graph is a set of paths "from→to:port".
type Graph map[string]bool

func edge(from, to, port string) string { return from + "→" + to + ":" + port }

// Sorted lists g's paths.
func (g Graph) Sorted() []string {
	s := make([]string, 0, len(g))
	for e := range g {
		s = append(s, e)
	}
	sort.Strings(s)
	return s
}

// Diff lists the paths of g missing from other and those of other not in g.
func (g Graph) Diff(other Graph) (missing, extra []string) {
	for _, e := range g.Sorted() {
		if !other[e] {
			missing = append(missing, e)
		}
	}
	for _, e := range other.Sorted() {
		if !g[e] {
			extra = append(extra, e)
		}
	}
	return missing, extra
}

// MeshCalls derives the mesh's gRPC call graph from the code under root (the repository):
// for every proto service, the servers are the processes (services/<name>) that register it,
// and the callers of an RPC with a `callers` access rule are the mesh identities it names;
// the gateway calls each of its backends (meshBackends in gateway/cmd/gateway). A process's
// mesh identity is its name. Paths are on the callee's port "grpc".
func MeshCalls(root string) (Graph, error) {
	servers, err := protoServers(root)
	if err != nil {
		return nil, err
	}
	callers, err := protoCallers(root)
	if err != nil {
		return nil, err
	}
	g := Graph{}
	for svc, who := range callers {
		srv := servers[svc]
		if len(srv) == 0 {
			if strings.Contains(svc, ".meshtest.") { // served only by the platform's tests
				continue
			}
			return nil, fmt.Errorf("proto service %s has callers rules but no process registers it", svc)
		}
		for _, s := range srv {
			for _, c := range who {
				g[edge(c, s, "grpc")] = true
			}
		}
	}
	backends, err := gatewayBackends(filepath.Join(root, "gateway", "cmd", "gateway", "main.go"))
	if err != nil {
		return nil, err
	}
	for _, b := range backends {
		g[edge("gateway", b, "grpc")] = true
	}
	return g, nil
}

var (
	protoPackage = regexp.MustCompile(`(?m)^package\s+([\w.]+)\s*;`)
	protoService = regexp.MustCompile(`(?m)^service\s+(\w+)\s*\{`)
	protoRPC     = regexp.MustCompile(`\brpc\s+(\w+)\s*\(`)
	callersRule  = regexp.MustCompile(`callers\s*:\s*\{\s*services\s*:\s*\[([^\]]*)\]\s*\}`)
	lineComment  = regexp.MustCompile(`//[^\n]*`)
)

// protoCallers maps each proto service (package.Service) to the mesh identities its RPCs'
// `callers` rules name. An RPC whose rule mentions callers in a form this parser does not
// read is an error, so a reformatted proto cannot silently drop paths.
func protoCallers(root string) (map[string][]string, error) {
	out := map[string][]string{}
	err := filepath.WalkDir(filepath.Join(root, "proto"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".proto") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		src := lineComment.ReplaceAllString(string(b), "")
		pkg := protoPackage.FindStringSubmatch(src)
		svcs := protoService.FindAllStringSubmatchIndex(src, -1)
		for i, s := range svcs {
			end := len(src)
			if i+1 < len(svcs) {
				end = svcs[i+1][0]
			}
			name := pkg[1] + "." + src[s[2]:s[3]]
			body := src[s[1]:end]
			rpcs := protoRPC.FindAllStringSubmatchIndex(body, -1)
			for j, r := range rpcs {
				rend := len(body)
				if j+1 < len(rpcs) {
					rend = rpcs[j+1][0]
				}
				rpc := body[r[0]:rend]
				if !strings.Contains(rpc, "callers") {
					continue
				}
				m := callersRule.FindStringSubmatch(rpc)
				if m == nil {
					return fmt.Errorf("%s: %s.%s: callers rule in a form not understood", path, name, body[r[2]:r[3]])
				}
				for _, q := range strings.Split(m[1], ",") {
					if q = strings.TrimSpace(q); q == "" {
						continue
					}
					c, err := strconv.Unquote(q)
					if err != nil {
						return fmt.Errorf("%s: %s: caller %s: %w", path, name, q, err)
					}
					if !slices.Contains(out[name], c) {
						out[name] = append(out[name], c)
					}
				}
			}
		}
		return nil
	})
	return out, err
}

// protoServers maps each proto service (package.Service) to the processes under services/
// whose non-test code calls its generated Register<Service>Server.
func protoServers(root string) (map[string][]string, error) {
	pkgs := map[string]string{} // Go identifier Register<Service>Server → package.Service
	err := filepath.WalkDir(filepath.Join(root, "proto"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".proto") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		src := lineComment.ReplaceAllString(string(b), "")
		pkg := protoPackage.FindStringSubmatch(src)
		for _, s := range protoService.FindAllStringSubmatch(src, -1) {
			pkgs["Register"+s[1]+"Server"] = pkg[1] + "." + s[1]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	dirs, err := os.ReadDir(filepath.Join(root, "services"))
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		err := filepath.WalkDir(filepath.Join(root, "services", d.Name()), func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for reg, svc := range pkgs {
				if strings.Contains(string(b), "."+reg+"(") && !slices.Contains(out[svc], d.Name()) {
					out[svc] = append(out[svc], d.Name())
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// gatewayBackends reads the names of the gateway's meshBackends (the first field of each).
func gatewayBackends(file string) ([]string, error) {
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		return nil, err
	}
	var names []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || vs.Names[0].Name != "meshBackends" || len(vs.Values) != 1 {
			return true
		}
		lit, ok := vs.Values[0].(*ast.CompositeLit)
		if !ok {
			return false
		}
		for _, el := range lit.Elts {
			cl, ok := el.(*ast.CompositeLit)
			if !ok || len(cl.Elts) == 0 {
				continue
			}
			if bl, ok := cl.Elts[0].(*ast.BasicLit); ok && bl.Kind == token.STRING {
				s, _ := strconv.Unquote(bl.Value)
				names = append(names, s)
			}
		}
		return false
	})
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: no meshBackends found", file)
	}
	return names, nil
}

// WantedGraphs are the paths the network policies must allow, ingress and egress, for the
// processes built in objs: the mesh calls (from the code), Infra, (egress only) Outside, the
// edge to the gateway, Prometheus to every process's admin port and (ingress only) KEDA to NATS
// monitoring.
func WantedGraphs(mesh Graph, objs []Object) (ingress, egress Graph) {
	ingress, egress = Graph{}, Graph{}
	for e := range mesh {
		ingress[e], egress[e] = true, true
	}
	for _, i := range Infra {
		e := edge(i.From, i.To, strconv.Itoa(i.Port))
		ingress[e], egress[e] = true, true
	}
	for _, o := range Outside {
		egress[edge(o.From, o.To, strconv.Itoa(o.Port))] = true
	}
	ingress[edge(Edge, "gateway", "https")] = true
	ingress[edge(KEDA, "nats", "8222")] = true
	for _, w := range Workloads(objs) {
		if w.Pod.Labels["app.kubernetes.io/part-of"] == "campaignmesh" {
			ingress[edge(Monitoring, w.Pod.Labels[NameLabel], "admin")] = true
		}
	}
	return ingress, egress
}

// PolicyGraphs reads the paths the NetworkPolicies of objs allow, apart from the default deny
// and DNS (CheckDefaultDeny). A peer is named by its pods' NameLabel, by its namespace
// (monitoring, keda), as the edge when a rule allows any source, or, for an address range, by
// the policy's campaignmesh.io/peer label. Rules it cannot name are reported as problems.
func PolicyGraphs(objs []Object) (ingress, egress Graph, problems []string) {
	ingress, egress = Graph{}, Graph{}
	for _, o := range objs {
		np, ok := o.Typed.(*networkingv1.NetworkPolicy)
		if !ok {
			continue
		}
		subject := np.Spec.PodSelector.MatchLabels[NameLabel]
		if subject == "" {
			if len(np.Spec.Ingress) > 0 || (len(np.Spec.Egress) > 0 && !(len(np.Spec.Egress) == 1 && isDNSRule(np.Spec.Egress[0]))) {
				problems = append(problems, o.ID()+": selects every pod and allows more than DNS")
			}
			continue
		}
		peerName := func(p networkingv1.NetworkPolicyPeer) string {
			switch {
			case p.IPBlock != nil:
				problems = append(problems, ipBlockProblems(o.ID(), p.IPBlock)...)
				if n := np.Labels["campaignmesh.io/peer"]; n != "" {
					return n
				}
				return "ipBlock " + p.IPBlock.CIDR
			case p.NamespaceSelector != nil:
				return p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"]
			case p.PodSelector != nil && p.PodSelector.MatchLabels[NameLabel] != "":
				return p.PodSelector.MatchLabels[NameLabel]
			}
			return "unnamed peer"
		}
		ports := func(ps []networkingv1.NetworkPolicyPort) []string {
			var out []string
			for _, p := range ps {
				if p.Port == nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
					problems = append(problems, o.ID()+": a rule without a TCP port")
					continue
				}
				out = append(out, p.Port.String())
			}
			if len(out) == 0 {
				problems = append(problems, o.ID()+": a rule allows every port")
			}
			return out
		}
		for _, r := range np.Spec.Ingress {
			from := []string{Edge}
			if len(r.From) > 0 {
				from = nil
				for _, p := range r.From {
					from = append(from, peerName(p))
				}
			}
			for _, port := range ports(r.Ports) {
				for _, f := range from {
					ingress[edge(f, subject, port)] = true
				}
			}
		}
		for _, r := range np.Spec.Egress {
			if len(r.To) == 0 {
				problems = append(problems, o.ID()+": an egress rule to anywhere")
				continue
			}
			for _, port := range ports(r.Ports) {
				for _, p := range r.To {
					egress[edge(subject, peerName(p), port)] = true
				}
			}
		}
	}
	return ingress, egress, problems
}

// Internal are the address ranges that are never a service outside the site: private networks
// (RFC 1918), carrier-grade NAT (RFC 6598, the pod range of some clusters) and link-local
// (RFC 3927, where clouds serve instance metadata and credentials).
var Internal = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("169.254.0.0/16"),
}

// ipBlockProblems reports an ipBlock wider than an Internal range that does not except it: a
// rule meant for addresses outside (the providers' APIs) would also reach the cluster's pods,
// the site's network or the metadata endpoint. A block inside a range (a site's database
// subnet) is not wider and passes.
func ipBlockProblems(id string, b *networkingv1.IPBlock) []string {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return []string{id + ": ipBlock " + b.CIDR + ": " + err.Error()}
	}
	var p []string
	for _, in := range Internal {
		if !cidr.Addr().Is4() || cidr.Bits() >= in.Bits() || !cidr.Contains(in.Addr()) {
			continue
		}
		excepted := slices.ContainsFunc(b.Except, func(e string) bool {
			ex, err := netip.ParsePrefix(e)
			return err == nil && ex.Bits() <= in.Bits() && ex.Contains(in.Addr())
		})
		if !excepted {
			p = append(p, id+": ipBlock "+b.CIDR+" reaches "+in.String()+" (list it under except)")
		}
	}
	return p
}

// CheckGraph compares the paths the policies allow with the wanted ones, both ways.
func CheckGraph(mesh Graph) Check {
	return func(objs []Object) []string {
		in, out, p := PolicyGraphs(objs)
		wantIn, wantOut := WantedGraphs(mesh, objs)
		for _, c := range []struct {
			dir        string
			want, have Graph
		}{{"ingress", wantIn, in}, {"egress", wantOut, out}} {
			missing, extra := c.want.Diff(c.have)
			for _, e := range missing {
				p = append(p, c.dir+": path of the mesh not allowed: "+e)
			}
			for _, e := range extra {
				p = append(p, c.dir+": allowed path that is not in the mesh: "+e)
			}
		}
		return p
	}
}
