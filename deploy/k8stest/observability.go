package k8stest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// Names of the observability objects (deploy/observability/kustomization.yaml and
// deploy/components/prometheus-operator/prometheusrule.yaml); the docs name them too.
const (
	DashboardsConfigMap = "campaignmesh-dashboards"
	RulesConfigMap      = "campaignmesh-alert-rules"
	PrometheusRuleName  = "campaignmesh"
	// DashboardLabel is the label Grafana's dashboard sidecar selects ConfigMaps by.
	DashboardLabel = "grafana_dashboard"
)

// applyLimit is the size of the last-applied-configuration annotation `kubectl apply` (client
// side) stores the whole object in: a larger ConfigMap cannot be applied that way.
const applyLimit = 256 << 10

// Observability is the content of deploy/observability: the files the built objects must carry.
type Observability struct {
	// Dashboards maps each dashboards/*.json file name to its content.
	Dashboards map[string][]byte
	// RuleFiles maps each alerts/*.yaml rule file name to its content.
	RuleFiles map[string][]byte
}

// LoadObservability reads the dashboards and rule files under dir (deploy/observability).
func LoadObservability(dir string) (Observability, error) {
	var o Observability
	var err error
	if o.Dashboards, err = readGlob(filepath.Join(dir, "dashboards", "*.json")); err != nil {
		return o, err
	}
	if o.RuleFiles, err = readGlob(filepath.Join(dir, "alerts", "*.yaml")); err != nil {
		return o, err
	}
	return o, nil
}

func readGlob(pattern string) (map[string][]byte, error) {
	names, err := filepath.Glob(pattern)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no files match %s", pattern)
	}
	files := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, err
		}
		files[filepath.Base(n)] = b
	}
	return files, nil
}

// RuleGroups returns the groups of every rule file, in file name order, as generic values
// (the shape the built PrometheusRule's spec.groups decodes to).
func (o Observability) RuleGroups() ([]any, error) {
	var groups []any
	for _, name := range slices.Sorted(maps.Keys(o.RuleFiles)) {
		var f struct {
			Groups []any `json:"groups"`
		}
		if err := yaml.UnmarshalStrict(o.RuleFiles[name], &f); err != nil {
			return nil, fmt.Errorf("rule file %s: %w", name, err)
		}
		groups = append(groups, f.Groups...)
	}
	return groups, nil
}

// prometheusRuleHead is the PrometheusRule around the rule files' groups.
const prometheusRuleHead = `# GENERATED from deploy/observability/alerts/*.yaml: edit the rule file, then run
#   cd deploy && go test ./k8stest -run TestPrometheusRuleFile -update
# (the deploy tests fail while spec.groups differs from the rule file's groups).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: ` + PrometheusRuleName + `
spec:
  groups: []
`

// PrometheusRuleYAML renders the PrometheusRule whose spec.groups are the rule files' groups,
// comments and block scalars kept (YAML nodes, not values, are copied).
func (o Observability) PrometheusRuleYAML() ([]byte, error) {
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal([]byte(prometheusRuleHead), &doc); err != nil {
		return nil, err
	}
	groups := mappingValue(mappingValue(doc.Content[0], "spec"), "groups")
	groups.Style = 0
	for _, name := range slices.Sorted(maps.Keys(o.RuleFiles)) {
		var f yamlv3.Node
		if err := yamlv3.Unmarshal(o.RuleFiles[name], &f); err != nil {
			return nil, fmt.Errorf("rule file %s: %w", name, err)
		}
		g := mappingValue(f.Content[0], "groups")
		if g == nil || g.Kind != yamlv3.SequenceNode {
			return nil, fmt.Errorf("rule file %s: no groups list", name)
		}
		groups.Content = append(groups.Content, g.Content...)
	}
	var b bytes.Buffer
	enc := yamlv3.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// mappingValue returns the value of key in mapping node m (nil if absent).
func mappingValue(m *yamlv3.Node, key string) *yamlv3.Node {
	if m == nil || m.Kind != yamlv3.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// CheckObservability checks the observability objects a build carries (the components that
// add them are optional, so absent objects are not reported here): the dashboards ConfigMap
// holds every dashboard file unchanged, each valid JSON, and carries the sidecar's label; the
// rules ConfigMap holds every rule file unchanged; the PrometheusRule's groups are the rule
// files' groups; each ConfigMap fits `kubectl apply`.
func CheckObservability(want Observability) Check {
	return func(objs []Object) []string {
		var p []string
		for _, o := range objs {
			switch {
			case o.Kind == "ConfigMap" && o.Name == DashboardsConfigMap:
				cm := o.Typed.(*corev1.ConfigMap)
				if cm.Labels[DashboardLabel] != "1" {
					p = append(p, o.ID()+": no label "+DashboardLabel+`="1" (Grafana's sidecar would not load it)`)
				}
				p = append(p, sameFiles(o, cm, want.Dashboards)...)
				for k, v := range cm.Data {
					if !json.Valid([]byte(v)) {
						p = append(p, o.ID()+": "+k+" is not valid JSON")
					}
				}
				p = append(p, fitsApply(o)...)
			case o.Kind == "ConfigMap" && o.Name == RulesConfigMap:
				p = append(p, sameFiles(o, o.Typed.(*corev1.ConfigMap), want.RuleFiles)...)
				p = append(p, fitsApply(o)...)
			case o.Kind == "PrometheusRule":
				groups, err := want.RuleGroups()
				if err != nil {
					p = append(p, err.Error())
					continue
				}
				if !reflect.DeepEqual(dig(o.Raw, "spec", "groups"), groups) {
					p = append(p, o.ID()+": spec.groups differ from deploy/observability/alerts (regenerate: cd deploy && go test ./k8stest -run TestPrometheusRuleFile -update)")
				}
				p = append(p, targetsWatched(o, objs)...)
			}
		}
		return p
	}
}

// targetDownJobs reads the job regular expression of the TargetDown alert's expression.
var targetDownJobs = regexp.MustCompile(`up\{job=~"([^"]*)"\}`)

// targetsWatched reports the processes built in objs (workloads part of campaignmesh) whose
// scrape job (named after the process) the TargetDown alert of the PrometheusRule o does not
// match: a new process would otherwise go down unnoticed.
func targetsWatched(o Object, objs []Object) []string {
	var expr string
	groups, _ := dig(o.Raw, "spec", "groups").([]any)
	for _, g := range groups {
		rules, _ := dig(g.(map[string]any), "rules").([]any)
		for _, r := range rules {
			if m, _ := r.(map[string]any); m["alert"] == "TargetDown" {
				expr, _ = m["expr"].(string)
			}
		}
	}
	m := targetDownJobs.FindStringSubmatch(expr)
	if m == nil {
		return []string{o.ID() + `: no TargetDown alert with up{job=~"…"} (every process's target must be watched)`}
	}
	jobs, err := regexp.Compile("^(?:" + m[1] + ")$")
	if err != nil {
		return []string{o.ID() + ": TargetDown job pattern: " + err.Error()}
	}
	var p []string
	for _, w := range Workloads(objs) {
		if name := w.Pod.Labels[NameLabel]; w.Pod.Labels["app.kubernetes.io/part-of"] == "campaignmesh" && !jobs.MatchString(name) {
			p = append(p, o.ID()+": TargetDown does not watch the job "+name)
		}
	}
	return p
}

// sameFiles reports the keys of cm that are not exactly the files (missing, extra, changed).
func sameFiles(o Object, cm *corev1.ConfigMap, files map[string][]byte) []string {
	var p []string
	for _, name := range slices.Sorted(maps.Keys(files)) {
		got, ok := cm.Data[name]
		switch {
		case !ok:
			p = append(p, o.ID()+": lacks "+name+" (list it in deploy/observability/kustomization.yaml)")
		case got != string(files[name]):
			p = append(p, o.ID()+": "+name+" differs from the file")
		}
	}
	for _, k := range slices.Sorted(maps.Keys(cm.Data)) {
		if _, ok := files[k]; !ok {
			p = append(p, o.ID()+": "+k+" is no file of deploy/observability")
		}
	}
	if len(cm.BinaryData) > 0 {
		p = append(p, o.ID()+": binaryData "+strings.Join(slices.Sorted(maps.Keys(cm.BinaryData)), ", ")+" (the files are text)")
	}
	return p
}

func fitsApply(o Object) []string {
	b, err := json.Marshal(o.Raw)
	if err != nil {
		return []string{o.ID() + ": " + err.Error()}
	}
	if len(b) > applyLimit {
		return []string{fmt.Sprintf("%s: %d bytes, over the %d `kubectl apply` can store: split it", o.ID(), len(b), applyLimit)}
	}
	return nil
}
