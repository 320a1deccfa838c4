package k8stest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// root is the repository, the code the call graph is derived from.
const root = "../.."

// builds are every overlay and test combination: each must build and pass every check.
func builds(t *testing.T) []string {
	t.Helper()
	dirs := []string{"../overlays/dev", "../overlays/prod"}
	tests, err := filepath.Glob("../tests/*/kustomization.yaml")
	if err != nil || len(tests) == 0 {
		t.Fatalf("no test combinations under deploy/tests (%v)", err)
	}
	for _, k := range tests {
		dirs = append(dirs, filepath.Dir(k))
	}
	return dirs
}

var (
	meshOnce  sync.Once
	meshGraph Graph
	meshErr   error
)

func mesh(t *testing.T) Graph {
	t.Helper()
	meshOnce.Do(func() { meshGraph, meshErr = MeshCalls(root) })
	if meshErr != nil {
		t.Fatal(meshErr)
	}
	return meshGraph
}

func allChecks(t *testing.T) map[string]Check {
	checks := map[string]Check{"graph": CheckGraph(mesh(t)), "observability": CheckObservability(observability(t))}
	for n, c := range Checks {
		checks[n] = c
	}
	return checks
}

func TestBuildsPassChecks(t *testing.T) {
	for _, dir := range builds(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			objs, err := Build(dir)
			if err != nil {
				t.Fatal(err)
			}
			for name, check := range allChecks(t) {
				for _, p := range check(objs) {
					t.Errorf("%s: %s", name, p)
				}
			}
		})
	}
}

// TestMeshCallsFromCode pins a few paths the code is known to have, so a parser that reads
// nothing cannot pass the graph check with an empty graph on both sides.
func TestMeshCallsFromCode(t *testing.T) {
	g := mesh(t)
	for _, e := range []string{
		"ingest→auth:grpc", "gateway→auth:grpc", "campaigns→analytics:grpc",
		"dsr→analytics:grpc", "dsr→auth:grpc", "gateway→dsr:grpc", "gateway→ingest:grpc",
		"gateway→delivery:grpc", "delivery→auth:grpc",
	} {
		if !g[e] {
			t.Errorf("mesh graph lacks %s; has %v", e, g.Sorted())
		}
	}
	if g["analytics-writer→auth:grpc"] || g["campaigns→ingest:grpc"] {
		t.Errorf("mesh graph has paths the code does not: %v", g.Sorted())
	}
}

// TestDevFilesEqualOriginals: the dev overlay's copies (kustomize loads files only from within
// the overlay) are the files the compose stack and devenv use.
func TestDevFilesEqualOriginals(t *testing.T) {
	for copyName, orig := range map[string]string{
		"nats.conf":                     "../nats.conf",
		"tempo.yaml":                    "../tempo.yaml",
		"postgres-init.sh":              "../postgres-init.sh",
		"clickhouse-init.sh":            "../clickhouse-init.sh",
		"clickhouse-cluster-single.xml": "../clickhouse/config.d/cluster-single.xml",
	} {
		a, err := os.ReadFile(filepath.Join("../overlays/dev/files", copyName))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(orig)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("deploy/overlays/dev/files/%s differs from deploy/%s: copy it again", copyName, strings.TrimPrefix(orig, "../"))
		}
	}
}

func TestDecodeStrict(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field":        `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replica":2}}`,
		"wrong case":           `{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"},"spec":{"Ports":[]}}`,
		"duplicate field":      `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{},"data":{}}`,
		"wrong type":           `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replicas":"two"}}`,
		"unknown kind":         `{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"x"}}`,
		"unknown nested field": `{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"x","labelz":{}}}`,
	} {
		if _, err := Decode([]byte(doc)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	if _, err := Decode([]byte(`{"apiVersion":"keda.sh/v1alpha1","kind":"ScaledObject","metadata":{"name":"x"}}`)); err != nil {
		t.Errorf("allowed custom kind: %v", err)
	}
}

// breakObj returns a copy of objs in which fn changed the object kind/name (decoded again).
func breakObj(t *testing.T, objs []Object, kind, name string, fn func(m map[string]any)) []Object {
	t.Helper()
	out := slices.Clone(objs)
	found := false
	for i, o := range out {
		if o.Kind != kind || o.Name != name {
			continue
		}
		b, _ := json.Marshal(o.Raw)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		fn(m)
		b, _ = json.Marshal(m)
		n, err := Decode(b)
		if err != nil {
			t.Fatalf("%s/%s broken: %v", kind, name, err)
		}
		out[i], found = n, true
	}
	if !found {
		t.Fatalf("no %s/%s", kind, name)
	}
	return out
}

func drop(out []Object, kind, name string) []Object {
	return slices.DeleteFunc(slices.Clone(out), func(o Object) bool { return o.Kind == kind && o.Name == name })
}

func get(m map[string]any, path ...any) any {
	var v any = m
	for _, p := range path {
		switch k := p.(type) {
		case string:
			v = v.(map[string]any)[k]
		case int:
			v = v.([]any)[k]
		}
	}
	return v
}

func container(m map[string]any) map[string]any {
	return get(m, "spec", "template", "spec", "containers", 0).(map[string]any)
}

// TestChecksCatchBrokenObjects breaks one thing at a time in a good build: the check named
// must report it (and so cannot pass vacuously).
func TestChecksCatchBrokenObjects(t *testing.T) {
	dev, err := Build("../overlays/dev")
	if err != nil {
		t.Fatal(err)
	}
	keda, err := Build("../tests/prod-keda")
	if err != nil {
		t.Fatal(err)
	}
	checks := allChecks(t)
	cases := []struct {
		name, check string
		objs        []Object
		want        string // in one of the problems reported
	}{
		{"root allowed", "pod-security", breakObj(t, dev, "Deployment", "auth", func(m map[string]any) {
			container(m)["securityContext"].(map[string]any)["runAsNonRoot"] = false
		}), "auth container auth: runAsNonRoot"},
		{"writable root", "pod-security", breakObj(t, dev, "StatefulSet", "nats", func(m map[string]any) {
			delete(container(m)["securityContext"].(map[string]any), "readOnlyRootFilesystem")
		}), "nats container nats: readOnlyRootFilesystem"},
		{"escalation", "pod-security", breakObj(t, dev, "Deployment", "gateway", func(m map[string]any) {
			container(m)["securityContext"].(map[string]any)["allowPrivilegeEscalation"] = true
		}), "gateway: allowPrivilegeEscalation"},
		{"capability kept", "pod-security", breakObj(t, dev, "Deployment", "ingest", func(m map[string]any) {
			container(m)["securityContext"].(map[string]any)["capabilities"] = map[string]any{"drop": []any{"NET_RAW"}}
		}), "ingest: capabilities"},
		{"no seccomp", "pod-security", breakObj(t, dev, "Deployment", "dsr", func(m map[string]any) {
			delete(container(m)["securityContext"].(map[string]any), "seccompProfile")
			delete(get(m, "spec", "template", "spec", "securityContext").(map[string]any), "seccompProfile")
		}), "dsr: seccompProfile"},
		{"token mounted", "pod-security", breakObj(t, dev, "Deployment", "campaigns", func(m map[string]any) {
			delete(get(m, "spec", "template", "spec").(map[string]any), "automountServiceAccountToken")
		}), "campaigns: automountServiceAccountToken"},
		{"certificate subPath", "pod-security", breakObj(t, dev, "Deployment", "auth", func(m map[string]any) {
			container(m)["volumeMounts"].([]any)[0].(map[string]any)["subPath"] = "tls.crt"
		}), "tls mounted with subPath"},
		{"projected secrets subPath", "pod-security", breakObj(t, dev, "Deployment", "delivery", func(m map[string]any) {
			container(m)["volumeMounts"].([]any)[1].(map[string]any)["subPath"] = "pgpass"
		}), "delivery container delivery: secret volume secrets mounted with subPath"},
		{"host path", "pod-security", breakObj(t, dev, "StatefulSet", "postgres", func(m map[string]any) {
			get(m, "spec", "template", "spec", "volumes", 0).(map[string]any)["emptyDir"] = nil
			get(m, "spec", "template", "spec", "volumes", 0).(map[string]any)["hostPath"] = map[string]any{"path": "/var/run"}
		}), "is of a type the restricted standard refuses"},
		{"host network", "pod-security", breakObj(t, dev, "Deployment", "gateway", func(m map[string]any) {
			get(m, "spec", "template", "spec").(map[string]any)["hostNetwork"] = true
		}), "gateway: shares a host namespace"},
		{"host port", "pod-security", breakObj(t, dev, "Deployment", "gateway", func(m map[string]any) {
			container(m)["ports"].([]any)[0].(map[string]any)["hostPort"] = 443
		}), "host port 443"},
		{"namespace not restricted", "namespaces", breakObj(t, dev, "Namespace", "campaignmesh", func(m map[string]any) {
			get(m, "metadata", "labels").(map[string]any)["pod-security.kubernetes.io/enforce"] = "baseline"
		}), "enforce=restricted"},
		{"no limits", "resources", breakObj(t, dev, "StatefulSet", "analytics-writer", func(m map[string]any) {
			delete(container(m)["resources"].(map[string]any), "limits")
		}), "analytics-writer: no cpu limit"},
		{"no readiness probe", "probes", breakObj(t, dev, "Deployment", "analytics", func(m map[string]any) {
			delete(container(m), "readinessProbe")
		}), "analytics: no readiness probe"},
		{"probe on undeclared port", "probes", breakObj(t, dev, "Deployment", "auth", func(m map[string]any) {
			container(m)["livenessProbe"].(map[string]any)["grpc"] = map[string]any{"port": 8082}
		}), "liveness probe on port 8082"},
		{"service target port", "service-ports", breakObj(t, dev, "Service", "campaigns", func(m map[string]any) {
			get(m, "spec", "ports", 0).(map[string]any)["targetPort"] = "grcp"
		}), "target port grcp"},
		{"service selects nothing", "service-ports", breakObj(t, dev, "Service", "dsr", func(m map[string]any) {
			get(m, "spec").(map[string]any)["selector"] = map[string]any{NameLabel: "dsrr"}
		}), "Service/dsr: selects no workload"},
		{"pdb selects nothing", "selectors", breakObj(t, keda, "PodDisruptionBudget", "ingest", func(m map[string]any) {
			get(m, "spec", "selector").(map[string]any)["matchLabels"] = map[string]any{NameLabel: "ingester"}
		}), "PodDisruptionBudget/ingest: selects no workload"},
		{"hpa target missing", "selectors", breakObj(t, keda, "HorizontalPodAutoscaler", "gateway", func(m map[string]any) {
			get(m, "spec", "scaleTargetRef").(map[string]any)["name"] = "gw"
		}), "Deployment/gw, which does not exist"},
		{"hpa target sets replicas", "selectors", breakObj(t, keda, "Deployment", "ingest", func(m map[string]any) {
			get(m, "spec").(map[string]any)["replicas"] = 3
		}), "Deployment/ingest sets replicas"},
		{"scaledobject target missing", "selectors", breakObj(t, keda, "ScaledObject", "analytics-writer", func(m map[string]any) {
			get(m, "spec", "scaleTargetRef").(map[string]any)["name"] = "writer"
		}), "StatefulSet/writer, which does not exist"},
		{"latest", "images", breakObj(t, dev, "StatefulSet", "postgres", func(m map[string]any) {
			container(m)["image"] = "postgres:latest"
		}), "postgres:latest uses latest"},
		{"untagged", "images", breakObj(t, dev, "Deployment", "gateway", func(m map[string]any) {
			container(m)["image"] = "ghcr.io/campaignmesh/gateway"
		}), "gateway has no tag"},
		{"no default deny", "default-deny", drop(dev, "NetworkPolicy", "default-deny"), "no default-deny"},
		{"no dns", "default-deny", drop(dev, "NetworkPolicy", "allow-dns"), "no NetworkPolicy allowing DNS"},
		{"writer count", "writers", breakObj(t, dev, "StatefulSet", "analytics-writer", func(m map[string]any) {
			get(m, "spec").(map[string]any)["replicas"] = 3
		}), "3 replicas, writer-count 1"},
		{"keda adds writers one by one", "writers", breakObj(t, keda, "ScaledObject", "analytics-writer", func(m map[string]any) {
			get(m, "spec").(map[string]any)["maxReplicaCount"] = 8
		}), "max 8 replicas"},
		{"two SANs", "certificates", breakObj(t, dev, "Certificate", "ingest-tls", func(m map[string]any) {
			get(m, "spec").(map[string]any)["uris"] = []any{"spiffe://campaignmesh.local/ingest", "spiffe://campaignmesh.local/auth"}
		}), "Certificate ingest-tls: URI SANs"},
		{"writer identity", "certificates", breakObj(t, dev, "Certificate", "analytics-writer-tls", func(m map[string]any) {
			get(m, "spec").(map[string]any)["uris"] = []any{"spiffe://campaignmesh.local/analytics-writer"}
		}), "want exactly [spiffe://campaignmesh.local/analytics]"},
		{"long lifetime", "certificates", breakObj(t, dev, "Certificate", "dsr-tls", func(m map[string]any) {
			get(m, "spec").(map[string]any)["duration"] = "2160h"
		}), "duration 2160h"},
		{"no certificate", "certificates", drop(dev, "Certificate", "campaigns-tls"), "no Certificate for campaigns-tls"},
		{"path missing (ingress)", "graph", breakObj(t, dev, "NetworkPolicy", "analytics", func(m map[string]any) {
			r := get(m, "spec", "ingress", 0).(map[string]any)
			r["from"] = r["from"].([]any)[1:] // drop gateway
		}), "not allowed: gateway→analytics:grpc"},
		{"path missing (egress)", "graph", drop(dev, "NetworkPolicy", "ingest-to-nats"), "egress: path of the mesh not allowed: ingest→nats:4222"},
		{"extra path", "graph", breakObj(t, dev, "NetworkPolicy", "ingest", func(m map[string]any) {
			spec := get(m, "spec").(map[string]any)
			spec["egress"] = append(spec["egress"].([]any), map[string]any{
				"to":    []any{map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{NameLabel: "campaigns"}}}},
				"ports": []any{map[string]any{"port": "grpc"}},
			})
		}), "not in the mesh: ingest→campaigns:grpc"},
		{"any port", "graph", breakObj(t, dev, "NetworkPolicy", "campaigns-to-postgres", func(m map[string]any) {
			delete(get(m, "spec", "egress", 0).(map[string]any), "ports")
		}), "campaigns-to-postgres: a rule allows every port"},
		{"path outside missing", "graph", drop(dev, "NetworkPolicy", "delivery-to-providers"),
			"egress: path of the mesh not allowed: delivery→providers:443"},
		{"billing's path to Stripe missing", "graph", drop(dev, "NetworkPolicy", "billing-to-stripe"),
			"egress: path of the mesh not allowed: billing→stripe:443"},
		{"billing's path to Stripe reaches the cluster", "graph", breakObj(t, dev, "NetworkPolicy", "billing-to-stripe", func(m map[string]any) {
			get(m, "spec", "egress", 0, "to", 0, "ipBlock").(map[string]any)["except"] = []any{"10.0.0.0/8"}
		}), "billing-to-stripe: ipBlock 0.0.0.0/0 reaches 172.16.0.0/12"},
		{"outside reaches the metadata endpoint", "graph", breakObj(t, dev, "NetworkPolicy", "delivery-to-providers", func(m map[string]any) {
			b := get(m, "spec", "egress", 0, "to", 0, "ipBlock").(map[string]any)
			b["except"] = slices.DeleteFunc(b["except"].([]any), func(e any) bool { return e == "169.254.0.0/16" })
		}), "delivery-to-providers: ipBlock 0.0.0.0/0 reaches 169.254.0.0/16"},
		{"outside reaches the cluster", "graph", breakObj(t, dev, "NetworkPolicy", "delivery-to-providers", func(m map[string]any) {
			get(m, "spec", "egress", 0, "to", 0, "ipBlock").(map[string]any)["except"] = []any{"10.0.0.0/16"}
		}), "delivery-to-providers: ipBlock 0.0.0.0/0 reaches 10.0.0.0/8"},
		{"allow all from an empty selector", "graph", breakObj(t, dev, "NetworkPolicy", "allow-dns", func(m map[string]any) {
			get(m, "spec").(map[string]any)["ingress"] = []any{map[string]any{}}
		}), "allow-dns: selects every pod"},
	}
	for _, c := range cases {
		p := checks[c.check](c.objs)
		if !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, c.want) }) {
			t.Errorf("%s: check %s reported %q, want a problem with %q", c.name, c.check, p, c.want)
		}
	}
}
