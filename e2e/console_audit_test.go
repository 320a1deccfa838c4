package e2e

import (
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
)

// auditXSS is a user-supplied string the console must show as text.
const auditXSS = `<img src=x onerror=alert(1)>`

// consoleAudit: the audit log shows what was done (a user creation made over REST), its
// filters narrow the list, paging follows next_page_token, the chain verifies, bad filters are
// refused in words, a resource that came from a caller is escaped, and an analyst (no
// audit.read) sees no link and gets 403.
func consoleAudit(t *testing.T, env *consoleEnv) {
	before := time.Now().UTC().Add(-time.Minute).Format("2006-01-02T15:04")
	code, created, _ := env.m.rest(t, "POST", "/v1/users", env.token, map[string]any{
		"user": map[string]any{"email": "audit-probe@acme.example", "displayName": "Probe", "role": "ROLE_VIEWER"}, "password": "probe has a long password"},
		"X-Request-Id", "console-audit-probe")
	userID, _ := created["id"].(string)
	if code != http.StatusOK || userID == "" {
		t.Fatalf("create user: %d %v", code, created)
	}
	const createUser = "/campaignmesh.auth.v1.AuthService/CreateUser"

	code, body, _ := env.admin.get(t, "/console/audit")
	if code != http.StatusOK || !strings.Contains(body, "<h1>Audit log</h1>") || !strings.Contains(body, "Verify the chain") {
		t.Fatalf("audit page: %d\n%s", code, body)
	}
	_, body, _ = env.admin.get(t, "/console/audit?"+url.Values{"from": {before}, "size": {"100"}}.Encode())
	if !strings.Contains(body, userID) || !strings.Contains(body, "AuthService/CreateUser") {
		t.Errorf("the audit page does not list the user creation (%s)", userID)
	}

	// The action filter lists both user creations (the analyst's and the probe's); the
	// resource filter narrows it to the probe's, with its request id.
	q := url.Values{"method": {createUser}}
	_, body, _ = env.admin.get(t, "/console/audit?"+q.Encode())
	if n := auditRows(t, body); n < 2 {
		t.Errorf("CreateUser records: %d rows, want at least 2", n)
	}
	q.Set("resource", userID)
	code, body, _ = env.admin.get(t, "/console/audit?"+q.Encode())
	if n := auditRows(t, body); code != http.StatusOK || n != 1 || !strings.Contains(body, "console-audit-probe") || !strings.Contains(body, ">OK<") {
		t.Errorf("filtered by resource: %d, %d rows, want the probe's one record\n%s", code, n, body)
	}
	if !strings.Contains(body, ">"+env.adminLogin["email"]+"</a>") { // the actor by name, for a role that reads users
		t.Errorf("the record's actor is not shown as %s", env.adminLogin["email"])
	}
	q.Set("outcome", "PERMISSION_DENIED")
	if _, body, _ = env.admin.get(t, "/console/audit?"+q.Encode()); auditRows(t, body) != 0 || !strings.Contains(body, "No records match") {
		t.Errorf("filtered by resource and a failed outcome: %d rows, want none", auditRows(t, body))
	}

	// Paging: one record a page; the next page's link carries the token and the filter.
	seen := map[string]bool{}
	next := "/console/audit?" + url.Values{"method": {createUser}, "size": {"1"}}.Encode()
	for page := 1; next != ""; page++ {
		code, body, _ = env.admin.get(t, next)
		rows := auditRows(t, body)
		if code != http.StatusOK || rows > 1 {
			t.Fatalf("page %d (%s): %d, %d rows", page, next, code, rows)
		}
		if rows == 0 { // the service hands out a token when a page is full: the last may be empty
			if auditNextLink.MatchString(body) || page == 1 {
				t.Fatalf("page %d is empty but not the last", page)
			}
			break
		}
		seen[auditFirstResource(body)] = true
		if page > 1 && !strings.Contains(body, ">First page</a>") {
			t.Errorf("page %d has no link to the first page", page)
		}
		next = ""
		if m := auditNextLink.FindStringSubmatch(body); m != nil {
			next = html.UnescapeString(m[1])
			if u, _ := url.Parse(next); u.Query().Get("page_token") == "" || u.Query().Get("method") != createUser || u.Query().Get("size") != "1" {
				t.Fatalf("next page link %q lacks the token or the filter", next)
			}
		}
		if page > 50 {
			t.Fatal("more than 50 pages of user creations")
		}
	}
	if len(seen) < 2 || !seen[userID] {
		t.Errorf("paging showed resources %v, want every user creation including %s", seen, userID)
	}

	// The chain verifies (on request: it reads the whole chain).
	code, body, _ = env.admin.get(t, "/console/audit/verify")
	if code != http.StatusOK || !regexp.MustCompile(`id="chain-result" class="ok"><span class="state active">verified</span> All [0-9,]+ records`).MatchString(body) {
		t.Errorf("chain verification: %d\n%s", code, body)
	}

	// Bad filters are refused in words.
	for _, query := range []string{"size=1000", "size=0", "outcome=MAYBE", "from=yesterday", "method=CreateUser", "from=2026-01-02&to=2026-01-01",
		"resource=" + strings.Repeat("r", 300)} {
		if code, body, _ := env.admin.get(t, "/console/audit?"+query); code != http.StatusBadRequest || !strings.Contains(body, "Please check the filter") {
			t.Errorf("audit?%s: %d, want 400 in words", query, code)
		}
	}

	// A resource named by a caller (a refused cancel of a request whose id is markup) is text.
	if code, _, _ := env.m.rest(t, "POST", "/v1/dsr/requests/"+url.PathEscape(auditXSS)+":cancel", env.token, map[string]any{}); code == http.StatusOK {
		t.Fatalf("cancel of a request named %q succeeded", auditXSS)
	}
	probe := "/console/audit?" + url.Values{"resource": {auditXSS}, "from": {""}}.Encode()
	meshtest.Eventually(t, 30*time.Second, func() bool {
		_, body, _ = env.admin.get(t, probe)
		return auditRows(t, body) > 0
	}, "the refused cancel of %q in the audit log", auditXSS)
	if strings.Contains(body, auditXSS) || !strings.Contains(body, html.EscapeString(auditXSS)) {
		t.Errorf("the audit resource is not escaped:\n%s", body)
	}

	// An analyst has no audit.read: no link, and 403 on the pages.
	_, body, _ = env.analyst.get(t, "/console/")
	if strings.Contains(body, `href="/console/audit"`) || strings.Contains(body, "Audit log") {
		t.Errorf("the analyst's navigation links the audit log")
	}
	for _, path := range []string{"/console/audit", "/console/audit/verify", "/console/audit?" + q.Encode()} {
		if code, _, _ := env.analyst.get(t, path); code != http.StatusForbidden {
			t.Errorf("analyst GET %s: %d, want 403", path, code)
		}
	}
}

var (
	auditNextLink  = regexp.MustCompile(`<a href="([^"]+)" rel="next">Next page</a>`)
	auditResources = regexp.MustCompile(`(?s)<td><a href="[^"]*resource=[^"]*">([^<]*)</a></td>`)
)

// auditRows counts the rows of the audit table (0 without one).
func auditRows(t *testing.T, body string) int {
	t.Helper()
	_, table, ok := strings.Cut(body, `<table id="audit-records">`)
	if !ok {
		return 0
	}
	table, _, _ = strings.Cut(table, "</table>")
	_, rows, _ := strings.Cut(table, "<tbody>")
	return strings.Count(rows, "<tr>")
}

// auditFirstResource is the resource of the audit table's first row.
func auditFirstResource(body string) string {
	if m := auditResources.FindStringSubmatch(body); m != nil {
		return html.UnescapeString(m[1])
	}
	return ""
}
