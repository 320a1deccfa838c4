package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// TestConsole drives the web console over HTTP, as a browser would (cookies, forms with their
// CSRF token), against one real mesh: each screen's subtest, then the browser run
// (console_browser_test.go). The console's security rules that hold for every page are checked
// here once per kind.
func TestConsole(t *testing.T) {
	t.Parallel()
	m := startMesh(t)
	var login map[string]string
	if err := json.Unmarshal(m.bootstrapFile(t, "admin.json"), &login); err != nil {
		t.Fatal(err)
	}
	admin := m.consoleSignIn(t, login["tenant"], login["email"], login["password"])
	_, tok, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "admin.json"))
	token, _ := tok["accessToken"].(string)
	if code, _, _ := m.rest(t, "POST", "/v1/users", token, map[string]any{
		"user": map[string]any{"email": "ana@acme.example", "displayName": "Ana", "role": "ROLE_ANALYST"}, "password": "ana has a long password"}); code != 200 {
		t.Fatalf("create analyst: %d", code)
	}
	analyst := m.consoleSignIn(t, login["tenant"], "ana@acme.example", "ana has a long password")
	env := &consoleEnv{m: m, admin: admin, analyst: analyst, token: token, tenant: login["tenant"], adminLogin: login}

	t.Run("security", func(t *testing.T) { consoleSecurity(t, env) })
	t.Run("campaigns", func(t *testing.T) { consoleCampaigns(t, env) })
	t.Run("analytics", func(t *testing.T) { consoleAnalytics(t, env) })
	t.Run("events", func(t *testing.T) { consoleEvents(t, env) })
	t.Run("keys", func(t *testing.T) { consoleKeys(t, env) })
	t.Run("team", func(t *testing.T) { consoleTeam(t, env) })
	t.Run("audit", func(t *testing.T) { consoleAudit(t, env) })
	t.Run("privacy", func(t *testing.T) { consolePrivacy(t, env) })
	t.Run("tenants", func(t *testing.T) { consoleTenants(t, env) })
	t.Run("browser", func(t *testing.T) { consoleBrowser(t, env) })
}

// consoleEnv is what the console's subtests share: the mesh, signed-in console clients of an
// admin and an analyst, and an admin bearer token for setting things up over REST.
type consoleEnv struct {
	m              *mesh
	admin, analyst *consoleClient
	token, tenant  string
	adminLogin     map[string]string
}

// consoleClient is a browser without scripts: a cookie jar and the forms' CSRF token.
type consoleClient struct {
	m    *mesh
	http *http.Client
}

// consoleSignIn signs in through the console's form.
func (m *mesh) consoleSignIn(t *testing.T, tenant, email, password string) *consoleClient {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &consoleClient{m: m, http: &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: m.edgeTLS(t)},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	code, _, hdr := c.post(t, "/console/signin", url.Values{"tenant": {tenant}, "email": {email}, "password": {password}})
	if code != http.StatusSeeOther || hdr.Get("Location") != "/console/" {
		t.Fatalf("sign in as %s: %d %s", email, code, hdr.Get("Location"))
	}
	return c
}

// get fetches a console page: status, body, headers (redirects are not followed).
func (c *consoleClient) get(t *testing.T, path string) (int, string, http.Header) {
	t.Helper()
	return c.do(t, "GET", path, nil)
}

// post submits a form as the page would: the CSRF token of the session is added (taken from
// the overview page) unless the form has one, and Sec-Fetch-Site says same-origin.
func (c *consoleClient) post(t *testing.T, path string, form url.Values) (int, string, http.Header) {
	t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf"]; !ok && path != "/console/signin" {
		form.Set("csrf", c.csrf(t))
	}
	return c.do(t, "POST", path, form)
}

var csrfInput = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the session's form token, as the pages carry it.
func (c *consoleClient) csrf(t *testing.T) string {
	t.Helper()
	code, body, _ := c.get(t, "/console/account")
	m := csrfInput.FindStringSubmatch(body)
	if code != http.StatusOK || m == nil {
		t.Fatalf("no CSRF token on the account page: %d", code)
	}
	return m[1]
}

func (c *consoleClient) do(t *testing.T, method, path string, form url.Values, hdr ...string) (int, string, http.Header) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.m.url(path), body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, string(b), resp.Header
}
