package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// consoleSecurity checks the rules every console answer follows.
func consoleSecurity(t *testing.T, env *consoleEnv) {
	// Headers on every page, signed in or not.
	for _, path := range []string{"/console/", "/console/signin", "/console/nope", "/console/static/console.js"} {
		code, _, hdr := env.admin.get(t, path)
		if code >= 500 {
			t.Errorf("%s: %d", path, code)
		}
		csp := hdr.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
		if hdr.Get("X-Frame-Options") != "DENY" || hdr.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: framing/sniffing headers %v", path, hdr)
		}
	}
	// The session cookie is out of the page scripts' reach and same-site only.
	anon := &consoleClient{m: env.m, http: &http.Client{Transport: env.admin.http.Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	code, _, hdr := anon.do(t, "POST", "/console/signin", url.Values{"tenant": {env.adminLogin["tenant"]},
		"email": {env.adminLogin["email"]}, "password": {env.adminLogin["password"]}})
	if code != http.StatusSeeOther {
		t.Fatalf("sign in: %d", code)
	}
	set := hdr.Get("Set-Cookie")
	for _, want := range []string{"__Host-cm_console=", "HttpOnly", "Secure", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(set, want) {
			t.Errorf("session cookie %q lacks %s", set, want)
		}
	}
	if strings.Contains(set, "Domain=") {
		t.Errorf("session cookie %q names a domain", set)
	}
	// Signed out: pages send to the sign-in form and back; actions are refused.
	if code, _, hdr := anon.get(t, "/console/account"); code != http.StatusSeeOther || !strings.HasPrefix(hdr.Get("Location"), "/console/signin?next=") {
		t.Errorf("signed-out page: %d %s", code, hdr.Get("Location"))
	}
	if code, _, _ := anon.do(t, "POST", "/console/signout", url.Values{}); code != http.StatusUnauthorized {
		t.Errorf("signed-out action: %d, want 401", code)
	}
	// A wrong password is refused in words, without saying which field was wrong.
	if code, body, _ := anon.do(t, "POST", "/console/signin", url.Values{"tenant": {env.adminLogin["tenant"]},
		"email": {env.adminLogin["email"]}, "password": {"not the password"}}); code != http.StatusUnauthorized || !strings.Contains(body, "is not right") {
		t.Errorf("wrong password: %d", code)
	}
	// The sign-in form never redirects off the console (open redirect).
	for _, next := range []string{"https://evil.example/", "//evil.example/x", "/\\evil.example", "/v1/users"} {
		code, _, hdr := anon.do(t, "POST", "/console/signin", url.Values{"tenant": {env.adminLogin["tenant"]},
			"email": {env.adminLogin["email"]}, "password": {env.adminLogin["password"]}, "next": {next}})
		if code != http.StatusSeeOther || hdr.Get("Location") != "/console/" {
			t.Errorf("next=%q: %d → %q", next, code, hdr.Get("Location"))
		}
	}
	// Forms without the session's CSRF token, or from another site, are refused.
	if code, _, _ := env.admin.do(t, "POST", "/console/account/password", url.Values{"csrf": {"forged"}, "current": {"x"}, "new": {"y"}, "again": {"y"}}); code != http.StatusForbidden {
		t.Errorf("forged CSRF token: %d, want 403", code)
	}
	form := url.Values{"csrf": {env.admin.csrf(t)}, "current": {"x"}, "new": {"y"}, "again": {"y"}}
	req, _ := http.NewRequest("POST", env.m.url("/console/account/password"), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := env.admin.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site form: %d, want 403", resp.StatusCode)
	}
	// A tampered session cookie is no session.
	forged := &consoleClient{m: env.m, http: anon.http}
	if code, _, hdr := forged.do(t, "GET", "/console/", nil, "Cookie", "__Host-cm_console=AAAA"+strings.Repeat("A", 100)); code != http.StatusSeeOther || !strings.HasPrefix(hdr.Get("Location"), "/console/signin") {
		t.Errorf("forged cookie: %d %s", code, hdr.Get("Location"))
	}

	// A password change (auth ends every session of the user) sends the user to sign in again;
	// the new password works, the old one does not.
	if code, _, _ := env.m.rest(t, "POST", "/v1/users", env.token, map[string]any{
		"user": map[string]any{"email": "pw@acme.example", "displayName": "Pw", "role": "ROLE_VIEWER"}, "password": "the first long password"}); code != 200 {
		t.Fatalf("create user: %d", code)
	}
	pw := env.m.consoleSignIn(t, env.tenant, "pw@acme.example", "the first long password")
	if code, body, _ := pw.post(t, "/console/account/password", url.Values{"current": {"the first long password"}, "new": {"short"}, "again": {"short"}}); code != http.StatusBadRequest || !strings.Contains(body, "Please check") {
		t.Errorf("too short a new password: %d", code)
	}
	if code, _, _ := pw.post(t, "/console/account/password", url.Values{"current": {"the first long password"}, "new": {"a"}, "again": {"b"}}); code != http.StatusBadRequest {
		t.Errorf("new passwords that differ: %d", code)
	}
	if code, _, hdr := pw.post(t, "/console/account/password", url.Values{"current": {"the first long password"},
		"new": {"the second long password"}, "again": {"the second long password"}}); code != http.StatusSeeOther || hdr.Get("Location") != "/console/signin" {
		t.Fatalf("change password: %d %s", code, hdr.Get("Location"))
	}
	if code, _, hdr := pw.get(t, "/console/"); code != http.StatusSeeOther || !strings.HasPrefix(hdr.Get("Location"), "/console/signin") {
		t.Errorf("the session after the password change: %d %s", code, hdr.Get("Location"))
	}
	env.m.consoleSignIn(t, env.tenant, "pw@acme.example", "the second long password")
	if code, _, _ := anon.do(t, "POST", "/console/signin", url.Values{"tenant": {env.tenant}, "email": {"pw@acme.example"}, "password": {"the first long password"}}); code != http.StatusUnauthorized {
		t.Errorf("the old password: %d, want 401", code)
	}
}
