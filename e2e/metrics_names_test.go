package e2e

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// observabilityDir holds the Grafana dashboards and Prometheus alert rules.
const observabilityDir = "../deploy/observability"

// externalMetrics are the names dashboards and alerts may use that no mesh process exports, with
// who does. Anything else must be on some process's /metrics.
var externalMetrics = map[string]string{
	"up":                           "Prometheus (scrape health)",
	"jetstream_stream_total_bytes": "prometheus-nats-exporter -jsz=all",
	"jetstream_stream_limit_bytes": "prometheus-nats-exporter -jsz=all",
}

// promqlWords are PromQL's keywords: never metric names.
var promqlWords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true}

var (
	promqlString    = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	grafanaVariable = regexp.MustCompile(`\$\{[^}]*\}|\$\w+`)
	promqlBraces    = regexp.MustCompile(`\{[^{}]*\}|\[[^\[\]]*\]`)
	// A label list after a grouping or matching keyword: `by (job, instance)`.
	promqlLabelList = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promqlIdent     = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	labelValuesCall = regexp.MustCompile(`^\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)`)
)

// metricNames returns the metric names a PromQL expression (or a Grafana query using
// ${variables}) reads: identifiers that are not functions or aggregations (followed by "("),
// keywords, label names (inside {}, or in by/on/... lists), strings or durations ([5m]).
func metricNames(expr string) []string {
	if m := labelValuesCall.FindStringSubmatch(expr); m != nil { // a Grafana variable query
		return []string{m[1]}
	}
	s := promqlString.ReplaceAllString(expr, `""`)
	s = grafanaVariable.ReplaceAllString(s, "1")
	for prev := ""; prev != s; {
		prev, s = s, promqlBraces.ReplaceAllString(s, " ")
	}
	s = promqlLabelList.ReplaceAllString(s, " ")
	var names []string
	for _, loc := range promqlIdent.FindAllStringIndex(s, -1) {
		word := s[loc[0]:loc[1]]
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // the exponent or unit of a number: 1e3, 5m
		}
		if promqlWords[word] || strings.HasPrefix(strings.TrimLeft(s[loc[1]:], " \t\n"), "(") {
			continue
		}
		if !slices.Contains(names, word) {
			names = append(names, word)
		}
	}
	return names
}

// alertRule is a rule of an alert rule file, with the file's name.
type alertRule struct {
	file                string
	Alert, Record, Expr string
	Labels, Annotations map[string]string
}

// alertRules reads every rule of the alert rule files.
func alertRules(t *testing.T) []alertRule {
	t.Helper()
	var out []alertRule
	files, _ := filepath.Glob(filepath.Join(observabilityDir, "alerts", "*.yaml"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var file struct{ Groups []struct{ Rules []alertRule } }
		if err := yaml.Unmarshal(data, &file); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, g := range file.Groups {
			for _, r := range g.Rules {
				r.file = filepath.Base(f)
				out = append(out, r)
			}
		}
	}
	return out
}

// observabilityQueries returns every PromQL expression of the alert rule files and dashboards,
// by where it is (file: alert or panel title).
func observabilityQueries(t *testing.T) map[string]string {
	t.Helper()
	queries := map[string]string{}
	rules := alertRules(t)
	for _, r := range rules {
		queries[r.file+": "+r.Alert+r.Record] = r.Expr
	}
	dashboards, _ := filepath.Glob(filepath.Join(observabilityDir, "dashboards", "*.json"))
	for _, f := range dashboards {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		type panel struct {
			Title   string
			Targets []struct{ Expr string }
			Panels  []json.RawMessage
		}
		var d struct {
			Panels     []panel
			Templating struct {
				List []struct {
					Name, Type string
					Query      any
				}
			}
		}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		panels := d.Panels
		for i := 0; i < len(panels); i++ { // rows nest panels
			for _, raw := range panels[i].Panels {
				var p panel
				if err := json.Unmarshal(raw, &p); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				panels = append(panels, p)
			}
			for j, tg := range panels[i].Targets {
				queries[filepath.Base(f)+": "+panels[i].Title+" #"+string(rune('A'+j))] = tg.Expr
			}
		}
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			q, _ := v.Query.(string)
			if m, ok := v.Query.(map[string]any); ok {
				q, _ = m["query"].(string)
			}
			queries[filepath.Base(f)+": variable "+v.Name] = q
		}
	}
	if len(rules) == 0 || len(dashboards) == 0 {
		t.Fatalf("found %d alert rules and %d dashboards under %s", len(rules), len(dashboards), observabilityDir)
	}
	return queries
}

// unknownMetrics returns, by query, the names it reads that are neither exported nor external.
func unknownMetrics(queries map[string]string, exported map[string]bool) map[string][]string {
	unknown := map[string][]string{}
	for where, q := range queries {
		for _, name := range metricNames(q) {
			if !exported[name] && externalMetrics[name] == "" {
				unknown[where] = append(unknown[where], name)
			}
		}
	}
	return unknown
}

func TestMetricNamesOfPromQL(t *testing.T) {
	t.Parallel()
	for expr, want := range map[string][]string{
		`up{job=~"a|b"} == 0`: {"up"},
		`sum by (job, instance) (rate(grpc_server_handled_total{grpc_code=~"Unavailable|Internal"}[5m])) / on (job) group_left sum(x_total)`: {"grpc_server_handled_total", "x_total"},
		`histogram_quantile(0.99, sum without (pod) (rate(ingest_publish_seconds_bucket{job="$job"}[$__rate_interval])))`:                    {"ingest_publish_seconds_bucket"},
		`max by (job, instance) (writer_backlog_messages) > 0 and on (job, instance) sum(rate(writer_inserted_rows_total[10m])) == 0`:        {"writer_backlog_messages", "writer_inserted_rows_total"},
		`cm_dsr_oldest_open_request_age_seconds > 25 * 86400 or vector(1e3)`:                                                                 {"cm_dsr_oldest_open_request_age_seconds"},
		`(tls_certificate_not_after_timestamp_seconds - time()) < 0.2 * (a - b offset 1h)`:                                                   {"tls_certificate_not_after_timestamp_seconds", "a", "b"},
		`label_replace(rate(m_total[5m]), "dst", "$1", "src", "(.*)")`:                                                                       {"m_total"},
		`sum(rate(gateway_requests_total{route=~"${route:regex}"}[${__rate_interval}]))`:                                                     {"gateway_requests_total"},
		`label_values(grpc_server_handled_total, grpc_service)`:                                                                              {"grpc_server_handled_total"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%s) = %v, want %v", expr, got, want)
		}
	}
	// The comparison reports a made-up name, and not one that is exported or external.
	got := unknownMetrics(map[string]string{"q": `rate(cm_made_up_total[5m]) / rate(ingest_events_accepted_total[5m]) and up`},
		map[string]bool{"ingest_events_accepted_total": true})
	if !slices.Equal(got["q"], []string{"cm_made_up_total"}) || len(got) != 1 {
		t.Errorf("unknownMetrics = %v, want only cm_made_up_total", got)
	}
}

// scrapeNames returns the metric names on the /metrics of admin: the families' names (# TYPE,
// so a histogram's base name counts) and every sample's (its _bucket, _sum and _count).
func scrapeNames(t *testing.T, admin string, into map[string]bool) {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s/metrics: %d %v", admin, resp.StatusCode, err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			into[f[2]] = true
		} else if line != "" && !strings.HasPrefix(line, "#") {
			into[promqlIdent.FindString(line)] = true
		}
	}
}

// Every metric a dashboard or an alert rule reads is exported by a mesh process (or by the
// exporter externalMetrics names). The mesh runs as deployed (query API and writer apart) and
// gets the traffic that brings the on-demand series out: REST and gRPC calls, accepted and
// rejected events, a Segment batch, the writer landing events.
func TestDashboardsAndAlertsReadExportedMetrics(t *testing.T) {
	t.Parallel()
	queries := observabilityQueries(t)
	gatewayAdmin := freePort(t)
	s := startDSRSession(t, meshConfig{splitWriter: true, gatewayEnv: []string{"CM_GATEWAY_ADMIN_LISTEN=" + gatewayAdmin}})
	s.admins["gateway"] = gatewayAdmin

	if a, _ := s.send(event{id: "names-1", user: "u1", typ: "EVENT_TYPE_IMPRESSION", campaign: "c1"},
		event{id: "names-2", user: "u1", typ: "EVENT_TYPE_CLICK", campaign: "c1"}); a != 2 {
		t.Fatalf("accepted %v of 2 events", a)
	}
	// An event without a type is rejected (and dead-lettered): the rejection series appear.
	code, resp, _ := s.rest(t, "POST", "/v1/events:batch", s.key, map[string]any{"events": []map[string]any{{"eventId": "names-bad", "userId": "u1"}}})
	if code == http.StatusOK && resp["rejected"] == nil {
		t.Fatalf("an event without a type was not rejected: %d %v", code, resp)
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(s.key+":"))
	seg := map[string]any{"batch": []map[string]any{
		{"type": "track", "messageId": "names-seg-1", "userId": "u1", "event": "Signed Up", "timestamp": "not a time"},
		{"type": "track", "messageId": "names-seg-2", "userId": "u1"},
	}}
	if code, resp, _ := s.rest(t, "POST", "/v1/batch", "", seg, "Authorization", basic); code != http.StatusOK {
		t.Fatalf("segment batch: %d %v", code, resp)
	}
	waitFor(t, "the events landed", 60*time.Second, func() bool {
		return s.count(`SELECT count() FROM events WHERE tenant_id = ? AND event_id IN ('names-1', 'names-2')`, s.tenant) == 2
	})

	exported := map[string]bool{}
	var processes []string
	for name, admin := range s.admins {
		scrapeNames(t, admin, exported)
		processes = append(processes, name)
	}
	sort.Strings(processes)
	unknown := unknownMetrics(queries, exported)
	for where, names := range unknown {
		t.Errorf("%s reads %v: no process exports it (scraped %v) and no exporter in externalMetrics does", where, names, processes)
	}
	// Latency histograms link to traces: ingest's RPC and publish buckets carry the sampled
	// trace's id as an exemplar, shown to a scraper that asks for OpenMetrics.
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.admins["ingest"]+"/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	om, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(om.Body)
	om.Body.Close()
	for _, prefix := range []string{`grpc_server_handling_seconds_bucket{grpc_method="IngestEvents"`, "ingest_publish_seconds_bucket{"} {
		if !slices.ContainsFunc(strings.Split(string(body), "\n"), func(l string) bool {
			return strings.HasPrefix(l, prefix) && regexp.MustCompile(`# \{trace_id="[0-9a-f]{32}"\}`).MatchString(l)
		}) {
			t.Errorf("ingest's OpenMetrics /metrics has no %s... bucket with a trace_id exemplar", prefix)
		}
	}
	if len(queries) < 20 {
		t.Errorf("only %d queries found in the dashboards and rules", len(queries))
	}
}

// Dashboards import into any Grafana: schema 39 or later, every panel and query on the
// ${datasource} variable (no data source uid of one installation). Every alert links its
// runbook section (docs/runbooks.md#<alert, lowercased>), and has a severity.
func TestDashboardsAndAlertsArePortable(t *testing.T) {
	t.Parallel()
	dashboards, _ := filepath.Glob(filepath.Join(observabilityDir, "dashboards", "*.json"))
	for _, f := range dashboards {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			SchemaVersion int
			Templating    struct {
				List []struct{ Name, Type, Query any }
			}
		}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.SchemaVersion < 39 {
			t.Errorf("%s: schemaVersion %d, want 39 or later", f, d.SchemaVersion)
		}
		if !slices.ContainsFunc(d.Templating.List, func(v struct{ Name, Type, Query any }) bool {
			return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
		}) {
			t.Errorf("%s: no datasource variable of type prometheus", f)
		}
		// Every "datasource" object anywhere in the dashboard names the variable (the built-in
		// annotation's "-- Grafana --" aside).
		var walk func(path string, v any)
		walk = func(path string, v any) {
			switch v := v.(type) {
			case map[string]any:
				if ds, ok := v["datasource"].(map[string]any); ok && ds["uid"] != "${datasource}" && ds["uid"] != "-- Grafana --" {
					t.Errorf("%s: %s has data source %v, want uid ${datasource}", f, path, ds)
				}
				for k, c := range v {
					walk(path+"."+k, c)
				}
			case []any:
				for i, c := range v {
					walk(path+"["+strconv.Itoa(i)+"]", c)
				}
			}
		}
		var raw any
		_ = json.Unmarshal(data, &raw)
		walk("$", raw)
	}
	for _, r := range alertRules(t) {
		if r.Alert == "" {
			continue
		}
		if want := "docs/runbooks.md#" + strings.ToLower(r.Alert); !strings.HasSuffix(r.Annotations["runbook_url"], want) {
			t.Errorf("%s: %s runbook_url %q, want one ending in %s", r.file, r.Alert, r.Annotations["runbook_url"], want)
		}
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: %s severity %q, want warning or critical", r.file, r.Alert, s)
		}
	}
}
