package e2e

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// consoleAnalytics checks the campaign analytics screen against the API: events sent over
// REST show on the page with the numbers the API gives, every CSV download holds the API's
// numbers, the live counters follow new events, the range, compare, zone and granularity
// parameters are honoured and checked, a role without analytics.read is refused, and what
// event senders chose (variants, property values) is escaped in the page and neutralized in
// the CSV.
func consoleAnalytics(t *testing.T, env *consoleEnv) {
	m := env.m
	const evil = `<img src=x onerror=alert(1)>`
	const formula = `=HYPERLINK("http://evil.example","x")`
	_, created, _ := m.rest(t, "POST", "/v1/apikeys", env.token, map[string]any{"name": "console analytics sdk", "scopes": []string{"events.write"}})
	key, _ := created["secret"].(string)
	if key == "" {
		t.Fatalf("create key: %v", created)
	}

	// An active campaign in Berlin time (started a minute ago: the scheduler activates it).
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	code, c, _ := m.rest(t, "POST", "/v1/campaigns", env.token, map[string]any{
		"name": evil + " launch", "channel": "CHANNEL_WEB", "goal": map[string]any{"conversionEvent": "purchase"},
		"schedule": map[string]any{"start": time.Now().In(berlin).Add(-time.Minute).Format("2006-01-02T15:04:05"), "timeZone": "Europe/Berlin"},
		"budget":   map[string]any{"totalMicros": "1000000000", "currencyCode": "EUR", "pacing": "PACING_ASAP"},
		"variants": []map[string]any{{"name": "a", "weight": 50}, {"name": "b", "weight": 50}},
	})
	id, _ := c["id"].(string)
	if code != 200 || id == "" {
		t.Fatalf("create campaign: %d %v", code, c)
	}
	if code, c, _ := m.rest(t, "POST", "/v1/campaigns/"+id+":schedule", env.token, map[string]any{}); code != 200 {
		t.Fatalf("schedule: %d %v", code, c)
	}
	waitFor(t, "campaign active", 30*time.Second, func() bool {
		_, c, _ := m.rest(t, "GET", "/v1/campaigns/"+id, env.token, nil)
		return c["state"] == "STATE_ACTIVE"
	})

	ev := func(n int, typ, name, user, variant string, extra map[string]any) map[string]any {
		e := map[string]any{"eventId": fmt.Sprintf("ca-%s-%d", id[:8], n), "type": typ, "name": name, "userId": user, "campaignId": id, "variant": variant}
		for k, v := range extra {
			e[k] = v
		}
		return e
	}
	batch := []map[string]any{
		ev(1, "EVENT_TYPE_IMPRESSION", "view", "u1", "a", map[string]any{"properties": map[string]any{"country": "DE"}}),
		ev(2, "EVENT_TYPE_CLICK", "tap", "u1", "a", nil),
		ev(3, "EVENT_TYPE_CONVERSION", "purchase", "u1", "a", map[string]any{"value": map[string]any{"amountMicros": "12500000", "currency": "EUR"}}),
		ev(4, "EVENT_TYPE_IMPRESSION", "view", "u2", "a", map[string]any{"properties": map[string]any{"country": evil}}),
		ev(5, "EVENT_TYPE_IMPRESSION", "view", "u3", "b", map[string]any{"properties": map[string]any{"country": "=2+3"}}),
		ev(6, "EVENT_TYPE_CLICK", "tap", "u3", "b", nil),
		ev(7, "EVENT_TYPE_IMPRESSION", "view", "u4", evil, nil),
		ev(8, "EVENT_TYPE_IMPRESSION", "view", "u5", formula, nil),
	}
	if code, resp, _ := m.rest(t, "POST", "/v1/events:batch", key, map[string]any{"events": batch}); code != 200 || resp["accepted"] != float64(len(batch)) {
		t.Fatalf("send events: %d %v", code, resp)
	}

	// The page's default range: the last 7 days in the campaign's zone, today included.
	now := time.Now().In(berlin)
	start := time.Date(now.Year(), now.Month(), now.Day()-6, 0, 0, 0, 0, berlin)
	end := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, berlin)
	rng := "&startTime=" + url.QueryEscape(start.UTC().Format(time.RFC3339)) + "&endTime=" + url.QueryEscape(end.UTC().Format(time.RFC3339))
	var summary map[string]any
	waitFor(t, "the events in the API's summary", 30*time.Second, func() bool {
		_, summary, _ = m.rest(t, "GET", "/v1/analytics/summary?byVariant=true&campaignIds="+id+rng, env.token, nil)
		total, _ := summary["total"].(map[string]any)
		return total["impressions"] == "5" && total["clicks"] == "2" && total["conversions"] == "1"
	})
	apiVariants := map[string]map[string]any{}
	for _, r := range summary["campaigns"].([]any) {
		r := r.(map[string]any)
		v, _ := r["variant"].(string)
		apiVariants[v] = r["metrics"].(map[string]any)
	}

	// The page (as the analyst, whose role has analytics.read): the totals, the variants, the
	// campaign's time zone by default, the chart, the escaped names.
	base := "/console/campaigns/" + id + "/analytics"
	code, page, _ := env.analyst.get(t, base)
	if code != http.StatusOK {
		t.Fatalf("analytics page: %d\n%s", code, page)
	}
	for _, want := range []string{`data-live="impressions">5<`, `data-live="clicks">2<`, `data-live="conversions">1<`, `name="zone" value="Europe/Berlin"`,
		`<svg class="chart" role="img" aria-label="`, ">Download CSV</a>", "12.50 EUR", "&lt;img src=x onerror=alert(1)&gt; launch",
		"0.00 EUR of 1,000.00 EUR", `<meter min="0" max="1000000000" value="0"`, // pacing against the budget (no spend sent)
		base + "/variants.csv?", base + "/series.csv?", base + "/breakdown.csv?"} {
		if !strings.Contains(page, want) {
			t.Errorf("analytics page lacks %s", want)
		}
	}
	if strings.Contains(page, "<img") {
		t.Errorf("analytics page has an unescaped <img")
	}
	// The variants table: a's CTR 50 % (1 click of 2 impressions), b's 100 %: uplift +100 %.
	variantRow := func(body, name string) string {
		m := regexp.MustCompile(`<th scope="row">` + regexp.QuoteMeta(name) + `</th>(?s:(.*?))</tr>`).FindStringSubmatch(body)
		if m == nil {
			t.Errorf("no variants row %q", name)
			return ""
		}
		return m[1]
	}
	for name, want := range map[string][]string{
		"a":                     {">2<", ">1<", "50.00 %", "100.00 %", "12.50 EUR", "baseline"},
		"b":                     {">1<", "100.00 %", "&#43;100.00 %", "0.00 %"}, // html/template writes + as &#43;
		html.EscapeString(evil): {">1<", ">0<", "-100.00 %", "—"},
	} {
		row := variantRow(page, name)
		for _, w := range want {
			if !strings.Contains(row, w) {
				t.Errorf("variant %s row lacks %q: %s", name, w, row)
			}
		}
	}

	// CSV: the variants, as the API counts them; the formula variant neutralized.
	csvOf := func(path string) [][]string {
		t.Helper()
		code, body, hdr := env.analyst.get(t, path)
		if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "text/csv") ||
			!strings.HasPrefix(hdr.Get("Content-Disposition"), "attachment; filename=") {
			t.Fatalf("%s: %d %v\n%s", path, code, hdr, body)
		}
		rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
		if err != nil || len(rows) < 1 {
			t.Fatalf("%s: %v\n%s", path, err, body)
		}
		return rows
	}
	col := func(rows [][]string, name string) int {
		for i, h := range rows[0] {
			if h == name {
				return i
			}
		}
		t.Fatalf("no column %s in %v", name, rows[0])
		return -1
	}
	rows := csvOf(base + "/variants.csv")
	seen := map[string]bool{}
	for _, r := range rows[1:] {
		name := r[col(rows, "variant")]
		if name == "'"+formula {
			name = formula
		} else if strings.HasPrefix(name, "=") {
			t.Errorf("variants.csv: formula cell %q not neutralized", name)
		}
		api := apiVariants[name]
		if api == nil {
			if name == "" {
				continue
			}
			t.Errorf("variants.csv: variant %q the API does not have", name)
			continue
		}
		seen[name] = true
		for _, f := range []string{"impressions", "clicks", "conversions"} {
			want, _ := api[f].(string)
			if want == "" {
				want = "0"
			}
			if got := r[col(rows, f)]; got != want {
				t.Errorf("variants.csv %s %s = %s, API %s", name, f, got, want)
			}
		}
		if ctr, ok := api["ctr"].(float64); ok && r[col(rows, "ctr")] != strconv.FormatFloat(ctr, 'g', -1, 64) {
			t.Errorf("variants.csv %s ctr = %s, API %v", name, r[col(rows, "ctr")], ctr)
		}
	}
	if len(seen) != len(apiVariants) || !seen[formula] || !seen[evil] {
		t.Errorf("variants.csv has %v, the API %d variants", seen, len(apiVariants))
	}
	if r := rows[1]; r[col(rows, "variant")] != "a" || r[col(rows, "conversion_value_EUR")] != "12.5" || r[col(rows, "baseline")] != "true" {
		t.Errorf("variants.csv first row %v", r)
	}

	// Series by hour in UTC, compared with the previous period: the API's buckets.
	q := "?gran=hour&zone=UTC&compare=1&from=" + now.UTC().AddDate(0, 0, -1).Format(time.DateOnly) + "&to=" + now.UTC().Format(time.DateOnly)
	rows = csvOf(base + "/series.csv" + q)
	d0 := now.UTC().AddDate(0, 0, -1)
	sStart := time.Date(d0.Year(), d0.Month(), d0.Day(), 0, 0, 0, 0, time.UTC)
	_, series, _ := m.rest(t, "GET", "/v1/analytics/series?granularity=GRANULARITY_HOUR&timeZone=UTC&campaignId="+id+
		"&startTime="+url.QueryEscape(sStart.Format(time.RFC3339))+"&endTime="+url.QueryEscape(sStart.Add(48*time.Hour).Format(time.RFC3339)), env.token, nil)
	buckets, _ := series["buckets"].([]any)
	var current, previous int
	for _, r := range rows[1:] {
		switch r[col(rows, "period")] {
		case "current":
			if current < len(buckets) {
				b := buckets[current].(map[string]any)
				bt, _ := time.Parse(time.RFC3339, b["startTime"].(string))
				rt, err := time.Parse(time.RFC3339, r[col(rows, "bucket_start")])
				want, _ := b["metrics"].(map[string]any)["impressions"].(string)
				if want == "" {
					want = "0"
				}
				if err != nil || !rt.Equal(bt) || r[col(rows, "impressions")] != want {
					t.Errorf("series.csv bucket %d: %v, API %v", current, r, b)
				}
			}
			current++
		case "previous":
			previous++
		}
	}
	if current != 48 || len(buckets) != 48 || previous != 48 {
		t.Errorf("series.csv: %d buckets (API %d), %d previous; want 48 each", current, len(buckets), previous)
	}
	// The page with the same query: hours, the previous period's columns, the zone.
	code, page, _ = env.analyst.get(t, base+q)
	for _, want := range []string{"Numbers per hour", "Previous impressions", `name="zone" value="UTC"`, `<option value="hour" selected>`, "compared with"} {
		if code != http.StatusOK || !strings.Contains(page, want) {
			t.Errorf("page %s: %d, lacks %q", q, code, want)
		}
	}
	// A half-hour zone: buckets start at its local hours.
	rows = csvOf(base + "/series.csv?gran=hour&zone=Asia/Kolkata")
	if !strings.HasSuffix(rows[1][col(rows, "bucket_start")], "+05:30") {
		t.Errorf("series.csv in Asia/Kolkata: %v", rows[1])
	}

	// Breakdown by a property: the API's rows in its order, values neutralized.
	rows = csvOf(base + "/breakdown.csv?dim=property&key=country&metric=impressions")
	_, bd, _ := m.rest(t, "GET", "/v1/analytics/breakdown?dimension=DIMENSION_PROPERTY&propertyKey=country&metric=METRIC_IMPRESSIONS&limit=25&campaignId="+id+rng, env.token, nil)
	apiRows, _ := bd["rows"].([]any)
	if len(rows)-1 != len(apiRows) || len(apiRows) != 4 {
		t.Fatalf("breakdown.csv %v, API %v", rows, apiRows)
	}
	for i, r := range rows[1:] {
		a := apiRows[i].(map[string]any)
		value, _ := a["value"].(string)
		if value == "=2+3" {
			value = "'=2+3"
		}
		if r[0] != value || r[col(rows, "impressions")] != a["metrics"].(map[string]any)["impressions"] {
			t.Errorf("breakdown.csv row %d %v, API %v", i, r, a)
		}
	}
	code, page, _ = env.analyst.get(t, base+"?dim=property&key=country&metric=impressions")
	if code != http.StatusOK || !strings.Contains(page, `<th scope="row">&lt;img src=x onerror=alert(1)&gt;</th>`) || !strings.Contains(page, `<th scope="row">=2&#43;3</th>`) || strings.Contains(page, "<img") {
		t.Errorf("breakdown on the page: %d", code)
	}

	// Funnel: view → tap → purchase in this campaign, as the API counts it.
	fq := "?step=view&step=tap&step=purchase"
	rows = csvOf(base + "/funnel.csv" + fq)
	_, fn, _ := m.rest(t, "POST", "/v1/analytics/funnel", env.token, map[string]any{"steps": []map[string]any{
		{"eventName": "view", "campaignId": id}, {"eventName": "tap", "campaignId": id}, {"eventName": "purchase", "campaignId": id}},
		"startTime": start.UTC().Format(time.RFC3339), "endTime": end.UTC().Format(time.RFC3339), "windowSeconds": "86400"})
	steps, _ := fn["steps"].([]any)
	if len(rows) != 4 || len(steps) != 3 {
		t.Fatalf("funnel.csv %v, API %v", rows, fn)
	}
	for i, r := range rows[1:] {
		users, _ := steps[i].(map[string]any)["users"].(string)
		if r[col(rows, "users")] != users || r[col(rows, "event_name")] != []string{"view", "tap", "purchase"}[i] {
			t.Errorf("funnel.csv step %d %v, API %v", i, r, steps[i])
		}
	}
	if rows[1][col(rows, "users")] != "5" || rows[2][col(rows, "users")] != "2" || rows[3][col(rows, "users")] != "1" {
		t.Errorf("funnel.csv users %v", rows)
	}
	if code, page, _ := env.analyst.get(t, base+fq); code != http.StatusOK || !strings.Contains(page, `id="funnel"`) || !strings.Contains(page, base+"/funnel.csv?") {
		t.Errorf("funnel on the page: %d", code)
	}

	// Bad parameters: 400 in words, on the page, the downloads and the live stream.
	for _, bad := range []struct{ query, words string }{
		{"?zone=Mars/Olympus", "time zone"},
		{"?from=yesterday", "not a date"},
		{"?gran=minute", "granularity"},
		{"?compare=maybe", "Compare"},
		{"?from=2020-01-01&to=2026-01-01", "longer than 400 days"},
		{"?gran=hour&from=2026-01-01&to=2026-03-01", "at most 31 days"},
		{"?step=view", "at least 2 steps"},
		{"?dim=property", "property"},
		{"?metric=revenue", "metric"},
	} {
		for _, path := range []string{base, base + "/variants.csv", base + "/series.csv"} {
			code, body, _ := env.analyst.get(t, path+bad.query)
			if code != http.StatusBadRequest || !strings.Contains(body, bad.words) {
				t.Errorf("%s%s: %d, want 400 saying %q", path, bad.query, code, bad.words)
			}
		}
		if code, _, _ := env.analyst.do(t, "GET", base+"/live"+bad.query, nil, "Accept", "text/event-stream"); code != http.StatusBadRequest {
			t.Errorf("live%s: %d, want 400", bad.query, code)
		}
	}
	if code, _, _ := env.analyst.get(t, base+"/funnel.csv"); code != http.StatusBadRequest {
		t.Errorf("funnel.csv without steps: %d, want 400", code)
	}
	if code, _, _ := env.analyst.get(t, "/console/campaigns/00000000-0000-0000-0000-000000000000/analytics"); code != http.StatusNotFound {
		t.Errorf("analytics of an unknown campaign: %d, want 404", code)
	}

	// Live counters: the page's stream pushes the counters, and a new event changes them.
	src := regexp.MustCompile(`data-live-src="([^"]+)"`).FindStringSubmatch(page)
	if src == nil {
		t.Fatal("no live stream on the page")
	}
	live := openLive(t, env.analyst, html.UnescapeString(src[1]))
	if first := live.next(t); first.Impressions != 5 || first.Clicks != 2 || first.Conversions != 1 {
		t.Errorf("first live push %+v", first)
	}
	if code, resp, _ := m.rest(t, "POST", "/v1/events:batch", key, map[string]any{"events": []map[string]any{
		ev(9, "EVENT_TYPE_IMPRESSION", "view", "u6", "b", nil)}}); code != 200 || resp["accepted"] != float64(1) {
		t.Fatalf("send an event: %d %v", code, resp)
	}
	for c := live.next(t); c.Impressions != 6; c = live.next(t) {
		if c.Impressions != 5 {
			t.Fatalf("live push %+v", c)
		}
	}
	live.close()
	// A stream ends with its browser: more streams than a tenant may hold at once (20) open
	// one after the other, each closed before the next.
	for i := 0; i < 25; i++ {
		waitFor(t, fmt.Sprintf("live stream %d", i), 20*time.Second, func() bool {
			l, ok := tryLive(t, env.analyst, base+"/live")
			if ok {
				l.close()
			}
			return ok
		})
	}

	// A viewer (campaigns.read only): 403 on the page, the downloads and the stream.
	if code, _, _ := m.rest(t, "POST", "/v1/users", env.token, map[string]any{
		"user": map[string]any{"email": "analytics-viewer@acme.example", "displayName": "Vic", "role": "ROLE_VIEWER"}, "password": "vic has a long password"}); code != 200 {
		t.Fatalf("create viewer: %d", code)
	}
	viewer := m.consoleSignIn(t, env.tenant, "analytics-viewer@acme.example", "vic has a long password")
	for _, path := range []string{base, base + "/variants.csv", base + "/series.csv", base + "/breakdown.csv", base + "/funnel.csv" + fq} {
		if code, _, _ := viewer.get(t, path); code != http.StatusForbidden {
			t.Errorf("viewer %s: %d, want 403", path, code)
		}
	}
	if code, _, _ := viewer.do(t, "GET", base+"/live", nil, "Accept", "text/event-stream"); code != http.StatusForbidden {
		t.Errorf("viewer live: %d, want 403", code)
	}
}

// liveCounters is a push of the console's live stream.
type liveCounters struct{ Impressions, Clicks, Conversions int64 }

// liveStream reads a console text/event-stream as the browser's EventSource does.
type liveStream struct {
	lines *bufio.Scanner
	close func()
}

// openLive opens the stream at path (it must answer 200 with text/event-stream).
func openLive(t *testing.T, c *consoleClient, path string) *liveStream {
	t.Helper()
	l, ok := tryLive(t, c, path)
	if !ok {
		t.Fatalf("live stream %s did not open", path)
	}
	return l
}

func tryLive(t *testing.T, c *consoleClient, path string) (*liveStream, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	req, err := http.NewRequestWithContext(ctx, "GET", c.m.url(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("live stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		resp.Body.Close()
		cancel()
		return nil, false
	}
	return &liveStream{lines: bufio.NewScanner(resp.Body), close: func() { cancel(); resp.Body.Close() }}, true
}

// next reads until the next "counters" event (a "problem" event fails the test).
func (l *liveStream) next(t *testing.T) liveCounters {
	t.Helper()
	event := ""
	for l.lines.Scan() {
		line := l.lines.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := strings.TrimPrefix(line, "data: ")
			if event == "problem" {
				t.Fatalf("live stream problem: %s", data)
			}
			if event == "counters" {
				var c liveCounters
				if err := json.Unmarshal([]byte(data), &c); err != nil {
					t.Fatalf("live push %q: %v", data, err)
				}
				return c
			}
		case line == "":
			event = ""
		}
	}
	t.Fatalf("live stream ended: %v", l.lines.Err())
	return liveCounters{}
}
