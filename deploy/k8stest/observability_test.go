package k8stest

import (
	"flag"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite deploy/components/prometheus-operator/prometheusrule.yaml from the rule files")

const prometheusRuleFile = "../components/prometheus-operator/prometheusrule.yaml"

func observability(t *testing.T) Observability {
	t.Helper()
	o, err := LoadObservability("../observability")
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestPrometheusRuleFile: the PrometheusRule beside the ServiceMonitor carries the rule file's
// groups (kustomize cannot embed a file into a field, so it is a generated copy). With -update
// it is written again from the rule files.
func TestPrometheusRuleFile(t *testing.T) {
	obs := observability(t)
	gen, err := obs.PrometheusRuleYAML()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(prometheusRuleFile, gen, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := obs.RuleGroups()
	if err != nil {
		t.Fatal(err)
	}
	if len(want) == 0 {
		t.Fatal("the rule files have no groups")
	}
	// The generator itself must carry the groups unchanged (comments and styles aside).
	if g := specGroups(t, gen); !reflect.DeepEqual(g, want) {
		t.Errorf("generated PrometheusRule: spec.groups differ from the rule files")
	}
	b, err := os.ReadFile(prometheusRuleFile)
	if err != nil {
		t.Fatal(err)
	}
	if g := specGroups(t, b); !reflect.DeepEqual(g, want) {
		t.Errorf("%s: spec.groups differ from deploy/observability/alerts: run `cd deploy && go test ./k8stest -run TestPrometheusRuleFile -update`", prometheusRuleFile)
	}
}

func specGroups(t *testing.T, b []byte) any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return dig(m, "spec", "groups")
}

// TestObservabilityShipped: the overlays and combinations that opt in carry the three objects,
// so CheckObservability (which skips absent objects) checks them there.
func TestObservabilityShipped(t *testing.T) {
	for _, dir := range []string{"../overlays/prod", "../tests/dev-all-components"} {
		objs, err := Build(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"ConfigMap/" + DashboardsConfigMap, "ConfigMap/" + RulesConfigMap, "PrometheusRule/" + PrometheusRuleName} {
			if !slices.ContainsFunc(objs, func(o Object) bool { return o.ID() == id }) {
				t.Errorf("%s: no %s", dir, id)
			}
		}
	}
}

// TestObservabilityCheckCatches breaks one thing at a time in a good build.
func TestObservabilityCheckCatches(t *testing.T) {
	objs, err := Build("../tests/dev-all-components")
	if err != nil {
		t.Fatal(err)
	}
	check := CheckObservability(observability(t))
	if p := check(objs); len(p) > 0 {
		t.Fatalf("good build reported %q", p)
	}
	data := func(m map[string]any) map[string]any { return get(m, "data").(map[string]any) }
	cases := []struct {
		name string
		objs []Object
		want string
	}{
		{"dashboard missing", breakObj(t, objs, "ConfigMap", DashboardsConfigMap, func(m map[string]any) {
			delete(data(m), "campaignmesh-dsr.json")
		}), "lacks campaignmesh-dsr.json"},
		{"dashboard not JSON", breakObj(t, objs, "ConfigMap", DashboardsConfigMap, func(m map[string]any) {
			data(m)["campaignmesh-api.json"] = `{"panels": [`
		}), "campaignmesh-api.json is not valid JSON"},
		{"dashboard changed", breakObj(t, objs, "ConfigMap", DashboardsConfigMap, func(m map[string]any) {
			data(m)["campaignmesh-api.json"] = `{}`
		}), "campaignmesh-api.json differs from the file"},
		{"stray key", breakObj(t, objs, "ConfigMap", DashboardsConfigMap, func(m map[string]any) {
			data(m)["old.json"] = `{}`
		}), "old.json is no file"},
		{"no sidecar label", breakObj(t, objs, "ConfigMap", DashboardsConfigMap, func(m map[string]any) {
			delete(get(m, "metadata", "labels").(map[string]any), DashboardLabel)
		}), "no label grafana_dashboard"},
		{"too big to apply", breakObj(t, objs, "ConfigMap", DashboardsConfigMap, func(m map[string]any) {
			data(m)["campaignmesh-api.json"] = `"` + strings.Repeat("x", applyLimit) + `"`
		}), "over the 262144"},
		{"rule file changed", breakObj(t, objs, "ConfigMap", RulesConfigMap, func(m map[string]any) {
			data(m)["campaignmesh.rules.yaml"] = strings.Replace(data(m)["campaignmesh.rules.yaml"].(string), "> 0.05", "> 0.5", 1)
		}), "campaignmesh.rules.yaml differs from the file"},
		{"rule file missing", breakObj(t, objs, "ConfigMap", RulesConfigMap, func(m map[string]any) {
			delete(data(m), "campaignmesh.rules.yaml")
		}), "lacks campaignmesh.rules.yaml"},
		{"prometheusrule threshold", breakObj(t, objs, "PrometheusRule", PrometheusRuleName, func(m map[string]any) {
			r := get(m, "spec", "groups", 0, "rules", 0).(map[string]any)
			r["for"] = "1m"
		}), "spec.groups differ"},
		{"process not watched", breakObj(t, objs, "PrometheusRule", PrometheusRuleName, func(m map[string]any) {
			for _, g := range get(m, "spec", "groups").([]any) {
				for _, r := range get(g.(map[string]any), "rules").([]any) {
					if r := r.(map[string]any); r["alert"] == "TargetDown" {
						r["expr"] = strings.Replace(r["expr"].(string), "|delivery", "", 1)
					}
				}
			}
		}), "TargetDown does not watch the job delivery"},
		{"prometheusrule group dropped", breakObj(t, objs, "PrometheusRule", PrometheusRuleName, func(m map[string]any) {
			spec := get(m, "spec").(map[string]any)
			spec["groups"] = spec["groups"].([]any)[1:]
		}), "spec.groups differ"},
	}
	for _, c := range cases {
		p := check(c.objs)
		if !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, c.want) }) {
			t.Errorf("%s: reported %q, want a problem with %q", c.name, p, c.want)
		}
	}
}
