package e2e

import (
	"bufio"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/url"
	"path"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
)

// consolePrivacy: a privacy officer answers data-subject requests in the console. An access
// request made through the form (a double submit makes one request) completes; its export
// downloads as the API's export and its receipt verifies. While analytics is down, an access
// request's deadline is extended once and the request cancelled, and an erasure shows the
// analytics participant retrying with its error, then every service done once analytics is
// back. The policy editor changes what the API answers and refuses a stale form (409).
// Identifier values and reasons are escaped; an analyst sees no link and gets 403 everywhere.
func consolePrivacy(t *testing.T, env *consoleEnv) {
	m := env.m
	if code, r, _ := m.rest(t, "POST", "/v1/users", env.token, map[string]any{
		"user": map[string]any{"email": "dpo@acme.example", "displayName": "Dee", "role": "ROLE_PRIVACY_OFFICER"}, "password": "dee has a long password"}); code != http.StatusOK {
		t.Fatalf("create privacy officer: %d %v", code, r)
	}
	dpo := m.consoleSignIn(t, env.adminLogin["tenant"], "dpo@acme.example", "dee has a long password")
	code, key, _ := m.rest(t, "POST", "/v1/apikeys", env.token, map[string]any{"name": "privacy-sdk", "scopes": []string{"events.write"}})
	secret, _ := key["secret"].(string)
	if code != http.StatusOK || secret == "" {
		t.Fatalf("create key: %d %v", code, key)
	}
	var events []map[string]any
	for _, id := range []string{"cp-1", "cp-2", "cp-3"} {
		events = append(events, map[string]any{"eventId": id, "type": "EVENT_TYPE_CLICK", "name": "e", "userId": "con-pat-1", "campaignId": "c-privacy"})
	}
	if code, r, _ := m.rest(t, "POST", "/v1/events:batch", secret, map[string]any{"events": events}); code != http.StatusOK {
		t.Fatalf("send events: %d %v", code, r)
	}

	// The officer's navigation has Privacy; the page offers the create form.
	code, body, _ := dpo.get(t, "/console/privacy")
	if code != http.StatusOK || !strings.Contains(body, `href="/console/privacy"`) || !strings.Contains(body, "Create request") {
		t.Fatalf("privacy page: %d\n%s", code, body)
	}
	access := url.Values{"kind": {"access"}, "regulation": {"gdpr"}, "request_id": {privacyFormKey(t, body)},
		"ident_1": {"user_id"}, "value_1": {"con-pat-1"}, "ident_2": {"email"}, "value_2": {"dpo@acme.example"}, "ident_3": {"email"}, "value_3": {""}}
	id := privacyCreate(t, dpo, access)
	if again := privacyCreate(t, dpo, access); again != id { // a double submit
		t.Errorf("the same form submitted twice made requests %s and %s", id, again)
	}
	_, list, _ := m.rest(t, "GET", "/v1/dsr/requests", env.token, nil)
	if n := privacyCount(list, func(r map[string]any) bool { return r["requestId"] == access.Get("request_id") }); n != 1 {
		t.Errorf("%d requests with the form's key, want 1", n)
	}

	page := "/console/privacy/requests/" + id
	meshtest.Eventually(t, 60*time.Second, func() bool {
		_, body, _ = dpo.get(t, page)
		if strings.Contains(body, `class="state failed"`) || strings.Contains(body, `class="state cancelled"`) {
			t.Fatalf("the access request ended badly:\n%s", body)
		}
		return strings.Contains(body, `id="dsr-state" class="state completed"`)
	}, "access request %s completed on its page", id)
	for _, want := range []string{"Download export", `id="receipt-verdict"><span class="state active">verified</span>`, "Download receipt", `data-participant="analytics"`, `data-participant="auth"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the completed request's page lacks %q", want)
		}
	}

	// The export: an NDJSON attachment with the API's lines.
	code, export, hdr := dpo.get(t, page+"/export")
	if code != http.StatusOK || hdr.Get("Content-Type") != "application/x-ndjson" || !strings.HasPrefix(hdr.Get("Content-Disposition"), "attachment;") {
		t.Fatalf("export download: %d %v", code, hdr)
	}
	req, _ := http.NewRequest("GET", m.url("/v1/dsr/requests/"+id+"/export"), nil)
	req.Header.Set("Authorization", "Bearer "+env.token)
	resp, err := m.httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	apiExport, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	got, want := privacyLines(t, export), privacyLines(t, string(apiExport))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the console's export differs from the API's:\nconsole %v\napi     %v", got, want)
	}
	if len(got) < 2 || got[0]["result"].(map[string]any)["manifest"] == nil {
		t.Errorf("export lines %v, want the manifest and records", got)
	}

	// The receipt: downloadable as JSON, and it verifies.
	code, receipt, hdr := dpo.get(t, page+"/receipt.json")
	var rc map[string]any
	if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Disposition"), "attachment;") || json.Unmarshal([]byte(receipt), &rc) != nil {
		t.Fatalf("receipt download: %d %v %s", code, hdr, receipt)
	}
	_, apiReceipt, _ := m.rest(t, "GET", "/v1/dsr/requests/"+id+"/receipt", env.token, nil)
	if rc["payload"] != apiReceipt["payload"] || rc["payload"] == nil {
		t.Errorf("the downloaded receipt's payload differs from the API's")
	}
	if code, v, _ := m.rest(t, "POST", "/v1/dsr/receipts:verify", "", map[string]any{"receipt": rc}); code != http.StatusOK || v["valid"] != true {
		t.Errorf("the downloaded receipt does not verify: %d %v", code, v)
	}

	// Filters.
	for query, listed := range map[string]bool{"kind=access&state=completed": true, "kind=erasure": false, "state=open": false, "overdue=1": false} {
		code, body, _ := dpo.get(t, "/console/privacy?"+query)
		if code != http.StatusOK || strings.Contains(body, "/console/privacy/requests/"+id) != listed {
			t.Errorf("privacy?%s: %d, lists the request: %t, want %t", query, code, !listed, listed)
		}
	}
	for _, query := range []string{"state=done", "kind=delete", "size=500"} {
		if code, body, _ := dpo.get(t, "/console/privacy?"+query); code != http.StatusBadRequest || !strings.Contains(body, "Please check the filter") {
			t.Errorf("privacy?%s: %d, want 400 in words", query, code)
		}
	}

	// analytics goes down: requests stay open.
	m.procs["analytics"].stop()
	restarted := false
	restart := func() {
		if !restarted {
			restarted = true
			m.procs["analytics"].start()
			waitFor(t, "analytics back", 30*time.Second, func() bool { return httpOK("http://" + m.admins["analytics"] + "/healthz") })
			waitFor(t, "analytics back behind the gateway", 30*time.Second, func() bool { // for the subtests after this one
				code, _, _ := m.rest(t, "GET", "/v1/analytics/summary?campaignIds=c-privacy", env.token, nil)
				return code == http.StatusOK
			})
		}
	}
	defer restart()

	// An open request: its deadline extended once (with a reason), then cancelled. What the
	// officer typed is shown as text.
	_, body, _ = dpo.get(t, "/console/privacy")
	open := url.Values{"kind": {"access"}, "regulation": {"ccpa"}, "request_id": {privacyFormKey(t, body)}, "ident_1": {"user_id"}, "value_1": {auditXSS}}
	openID := privacyCreate(t, dpo, open)
	openPage := "/console/privacy/requests/" + openID
	reason := auditXSS + " needs more time"
	if code, _, hdr := dpo.post(t, openPage+"/extend", url.Values{"days": {"10"}, "reason": {reason}}); code != http.StatusSeeOther || hdr.Get("Location") != openPage {
		t.Fatalf("extend: %d %s", code, hdr.Get("Location"))
	}
	_, body, _ = dpo.get(t, openPage)
	if strings.Contains(body, auditXSS) || !strings.Contains(body, `<q id="dsr-extension-reason">`+html.EscapeString(reason)+`</q>`) ||
		!strings.Contains(body, html.EscapeString(auditXSS)) {
		t.Errorf("the request page does not show the identifier and reason as text:\n%s", body)
	}
	if !regexp.MustCompile(`id="dsr-countdown">39 d \d+ h left`).MatchString(body) || strings.Contains(body, "Extend deadline") {
		t.Errorf("after the extension: no 39-day countdown, or the extend form is still offered")
	}
	if _, body, _ := dpo.get(t, "/console/privacy?state=open"); !regexp.MustCompile(`(?s)/console/privacy/requests/` + openID + `">.*?<td>39 d \d+ h left</td>`).MatchString(body) {
		t.Errorf("the list of open requests shows no countdown for %s:\n%s", openID, body)
	}
	if code, body, _ := dpo.post(t, openPage+"/extend", url.Values{"days": {"5"}, "reason": {"again"}}); code != http.StatusConflict || !strings.Contains(body, "already extended") {
		t.Errorf("second extension: %d, want 409 in words", code)
	}
	for _, bad := range []url.Values{{"days": {"61"}, "reason": {"r"}}, {"days": {"5"}, "reason": {""}}, {"days": {"5"}, "reason": {strings.Repeat("r", 501)}}} {
		if code, _, _ := dpo.post(t, openPage+"/extend", bad); code != http.StatusBadRequest {
			t.Errorf("extend with %v: %d, want 400", bad, code)
		}
	}
	_, list, _ = m.rest(t, "GET", "/v1/dsr/requests/"+openID, env.token, nil)
	if ext, _ := list["extension"].(map[string]any); ext == nil || ext["reason"] != reason || ext["days"] != float64(10) {
		t.Errorf("the API's extension: %v", list["extension"])
	}
	if !strings.Contains(body, `data-confirm="Cancel request `+openID) {
		t.Errorf("the cancel form asks no confirmation")
	}
	if code, _, hdr := dpo.post(t, openPage+"/cancel", nil); code != http.StatusSeeOther || hdr.Get("Location") != openPage {
		t.Fatalf("cancel: %d %s", code, hdr.Get("Location"))
	}
	if _, r, _ := m.rest(t, "GET", "/v1/dsr/requests/"+openID, env.token, nil); r["state"] != "STATE_CANCELLED" {
		t.Errorf("after cancel the API says %v", r["state"])
	}
	if _, body, _ = dpo.get(t, openPage); !strings.Contains(body, `class="state cancelled"`) || strings.Contains(body, "Cancel request") {
		t.Errorf("the cancelled request's page: state or cancel button wrong")
	}
	if _, body, _ = dpo.get(t, "/console/privacy"); strings.Contains(body, auditXSS) || !strings.Contains(body, html.EscapeString(auditXSS)) {
		t.Errorf("the request list does not show the identifier as text")
	}

	// An erasure: the analytics participant retries with its error shown, then every service
	// is done once analytics is back.
	erase := url.Values{"kind": {"erasure"}, "regulation": {"gdpr"}, "request_id": {privacyFormKey(t, body)}, "ident_1": {"user_id"}, "value_1": {"con-erase-1"}}
	eraseID := privacyCreate(t, dpo, erase)
	erasePage := "/console/privacy/requests/" + eraseID
	retrying := regexp.MustCompile(`(?s)<tr data-participant="analytics">\s*<th scope="row">analytics</th>\s*<td><span class="state retrying">retrying</span></td>\s*<td class="num">[1-9][0-9]*</td>.*?<span class="error">[^<]+</span>`)
	meshtest.Eventually(t, 30*time.Second, func() bool {
		_, body, _ = dpo.get(t, erasePage)
		return retrying.MatchString(body)
	}, "the erasure's page showing analytics retrying with its error")
	restart()
	meshtest.Eventually(t, 90*time.Second, func() bool {
		_, body, _ = dpo.get(t, erasePage)
		return strings.Contains(body, `id="dsr-state" class="state completed"`)
	}, "erasure %s completed on its page", eraseID)
	_, r, _ := m.rest(t, "GET", "/v1/dsr/requests/"+eraseID, env.token, nil)
	parts, _ := r["participants"].([]any)
	if len(parts) < 2 {
		t.Errorf("the API lists participants %v", parts)
	}
	for _, p := range parts {
		name, _ := p.(map[string]any)["participant"].(string)
		if !regexp.MustCompile(`<tr data-participant="` + name + `">\s*<th scope="row">` + name + `</th>\s*<td><span class="state done">done</span>`).MatchString(body) {
			t.Errorf("the erasure's page does not show %s done:\n%s", name, body)
		}
	}

	// Paging: one request a page, newest first; the next page's link carries the token.
	code, body, _ = dpo.get(t, "/console/privacy?size=1")
	next := privacyNextLink.FindStringSubmatch(body)
	if code != http.StatusOK || strings.Count(body, `<a href="/console/privacy/requests/`) != 1 || !strings.Contains(body, eraseID) || next == nil {
		t.Fatalf("first page of one: %d\n%s", code, body)
	}
	code, body, _ = dpo.get(t, html.UnescapeString(next[1]))
	if code != http.StatusOK || strings.Count(body, `<a href="/console/privacy/requests/`) != 1 || !strings.Contains(body, openID) || !strings.Contains(body, "First page") {
		t.Errorf("second page of one (%s): %d\n%s", next[1], code, body)
	}

	// The policy editor.
	code, body, _ = dpo.get(t, "/console/privacy/policy")
	etag := privacyEtag(t, body)
	if code != http.StatusOK || !strings.Contains(body, "Save policy") {
		t.Fatalf("policy page: %d", code)
	}
	edit := url.Values{"etag": {etag}, "retention_days": {"30"}, "ip_handling": {"truncate"}, "user_agent_handling": {"drop"},
		"default_action": {"keep"}, "rule_key": {"email", ""}, "rule_action": {"hash", "hash"}}
	if code, _, hdr := dpo.post(t, "/console/privacy/policy", edit); code != http.StatusSeeOther || hdr.Get("Location") != "/console/privacy/policy" {
		t.Fatalf("save policy: %d %s", code, hdr.Get("Location"))
	}
	_, p, _ := m.rest(t, "GET", "/v1/privacy/policy", env.token, nil)
	rules, _ := p["propertyRules"].([]any)
	if p["retentionDays"] != float64(30) || p["ipHandling"] != "IP_HANDLING_TRUNCATE" || p["userAgentHandling"] != "USER_AGENT_HANDLING_DROP" ||
		len(rules) != 1 || !reflect.DeepEqual(rules[0], map[string]any{"key": "email", "action": "PROPERTY_ACTION_HASH"}) {
		t.Errorf("the API's policy after the edit: %v", p)
	}
	if code, body, _ := dpo.post(t, "/console/privacy/policy", edit); code != http.StatusConflict || !strings.Contains(body, "Someone else changed this") {
		t.Errorf("a stale policy form: %d, want 409 in words", code)
	}
	if code, _, _ := dpo.post(t, "/console/privacy/policy", url.Values{"etag": {etag}, "retention_days": {"4000"}, "ip_handling": {"keep"},
		"user_agent_handling": {"keep"}, "default_action": {"keep"}}); code != http.StatusBadRequest {
		t.Errorf("retention of 4000 days: %d, want 400", code)
	}
	_, body, _ = dpo.get(t, "/console/privacy/policy") // back to the default, for the subtests after this one
	reset := url.Values{"etag": {privacyEtag(t, body)}, "retention_days": {"0"}, "ip_handling": {"keep"}, "user_agent_handling": {"keep"},
		"default_action": {"keep"}, "rule_key": {"", ""}, "rule_action": {"hash", "hash"}}
	if code, _, _ := dpo.post(t, "/console/privacy/policy", reset); code != http.StatusSeeOther {
		t.Errorf("reset policy: %d", code)
	}
	if _, p, _ = m.rest(t, "GET", "/v1/privacy/policy", env.token, nil); len(p["propertyRules"].([]any)) != 0 || p["ipHandling"] != "IP_HANDLING_KEEP" {
		t.Errorf("the API's policy after the reset: %v", p)
	}

	// An analyst has neither dsr.manage nor privacy.manage.
	_, body, _ = env.analyst.get(t, "/console/")
	if strings.Contains(body, `href="/console/privacy"`) {
		t.Errorf("the analyst's navigation links Privacy")
	}
	for _, path := range []string{"/console/privacy", page, page + "/export", page + "/receipt.json", "/console/privacy/policy"} {
		if code, _, _ := env.analyst.get(t, path); code != http.StatusForbidden {
			t.Errorf("analyst GET %s: %d, want 403", path, code)
		}
	}
	access.Set("request_id", "analyst-try")
	for path, form := range map[string]url.Values{
		"/console/privacy/requests": access, page + "/cancel": {}, page + "/extend": {"days": {"3"}, "reason": {"r"}},
		"/console/privacy/policy": reset,
	} {
		if code, _, _ := env.analyst.post(t, path, form); code != http.StatusForbidden {
			t.Errorf("analyst POST %s: %d, want 403", path, code)
		}
	}
	if _, r, _ := m.rest(t, "GET", "/v1/dsr/requests", env.token, nil); privacyCount(r, func(r map[string]any) bool { return r["requestId"] == "analyst-try" }) != 0 {
		t.Errorf("the analyst's form created a request")
	}
}

var (
	privacyKeyInput  = regexp.MustCompile(`name="request_id" value="([^"]+)"`)
	privacyEtagInput = regexp.MustCompile(`name="etag" value="([^"]*)"`)
	privacyNextLink  = regexp.MustCompile(`<a href="([^"]+)" rel="next">Next page</a>`)
)

// privacyFormKey is the create form's idempotency key.
func privacyFormKey(t *testing.T, body string) string {
	t.Helper()
	m := privacyKeyInput.FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no idempotency key in the create form")
	}
	return html.UnescapeString(m[1])
}

func privacyEtag(t *testing.T, body string) string {
	t.Helper()
	m := privacyEtagInput.FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no etag in the policy form")
	}
	return html.UnescapeString(m[1])
}

// privacyCreate submits the create form and returns the new request's id.
func privacyCreate(t *testing.T, c *consoleClient, form url.Values) string {
	t.Helper()
	code, body, hdr := c.post(t, "/console/privacy/requests", form)
	loc := hdr.Get("Location")
	if code != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/privacy/requests/dsr_") {
		t.Fatalf("create request: %d %q\n%s", code, loc, body)
	}
	return path.Base(loc)
}

// privacyCount counts the requests of a list answer that match.
func privacyCount(list map[string]any, match func(map[string]any) bool) int {
	n := 0
	reqs, _ := list["requests"].([]any)
	for _, r := range reqs {
		if m, _ := r.(map[string]any); m != nil && match(m) {
			n++
		}
	}
	return n
}

// privacyLines parses an NDJSON export.
func privacyLines(t *testing.T, body string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("export line %q: %v", sc.Bytes(), err)
		}
		out = append(out, line)
	}
	return out
}
