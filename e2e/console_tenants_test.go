package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
)

// consoleTenants: a platform operator signs in to the console (no organization), sees the
// tenants, creates one with its first administrator (whose invitation token is shown once
// and works) and suspends it; a tenant admin and an analyst are refused the page and forms.
func consoleTenants(t *testing.T, env *consoleEnv) {
	const evil = `<img src=x onerror=alert(1)>`
	const escaped = `&lt;img src=x onerror=alert(1)&gt;`
	var login map[string]string
	if err := json.Unmarshal(env.m.bootstrapFile(t, "operator.json"), &login); err != nil {
		t.Fatal(err)
	}
	op := env.m.consoleSignIn(t, login["tenant"], login["email"], login["password"])
	_, tok, _ := env.m.rest(t, "POST", "/v1/auth/login", "", env.m.bootstrapFile(t, "operator.json"))
	opToken, _ := tok["accessToken"].(string)

	code, body, _ := op.get(t, "/console/tenants")
	if code != http.StatusOK {
		t.Fatalf("tenants page: %d %s", code, body)
	}
	for _, want := range []string{`href="/console/tenants"`, ">Tenants</a>", "<code>" + env.tenant + "</code>", `action="/console/tenants"`,
		`>Create organization</button>`} {
		if !strings.Contains(body, want) {
			t.Errorf("tenants page lacks %q", want)
		}
	}

	// Create with a first admin → the invitation token once; the admin joins and signs in.
	code, _, hdr := op.post(t, "/console/tenants", url.Values{"slug": {"globex"}, "name": {evil}, "admin_email": {"boss@globex.example"}})
	if code != http.StatusSeeOther || hdr.Get("Location") != "/console/tenants" {
		t.Fatalf("create tenant: %d %q", code, hdr.Get("Location"))
	}
	_, body, _ = op.get(t, "/console/tenants")
	m := consoleSecret.FindStringSubmatch(body)
	if m == nil || !strings.HasPrefix(m[1], "cmi_") {
		t.Fatalf("the first admin's invitation token is not shown")
	}
	if strings.Contains(body, evil) || !strings.Contains(body, escaped) {
		t.Errorf("the tenant's name is not escaped on the tenants page")
	}
	if _, again, _ := op.get(t, "/console/tenants"); strings.Contains(again, m[1]) {
		t.Errorf("the invitation token is shown a second time")
	}
	_, list, _ := env.m.rest(t, "GET", "/v1/tenants?pageSize=1000", opToken, nil)
	id := ""
	for _, tn := range list["tenants"].([]any) {
		if tn := tn.(map[string]any); tn["slug"] == "globex" {
			id = tn["id"].(string)
			if tn["displayName"] != evil || tn["state"] != "STATE_ACTIVE" {
				t.Errorf("the API shows the new tenant as %v", tn)
			}
		}
	}
	if id == "" {
		t.Fatalf("the new tenant is not in the API's list")
	}
	if code, acc, _ := env.m.rest(t, "POST", "/v1/invitations:accept", "", map[string]any{"token": m[1], "displayName": "Boss", "password": "boss has a long password"}); code != http.StatusOK {
		t.Fatalf("accept the first admin's invitation: %d %v", code, acc)
	}
	boss := map[string]any{"tenant": "globex", "email": "boss@globex.example", "password": "boss has a long password"}
	code, bossTok, _ := env.m.rest(t, "POST", "/v1/auth/login", "", boss)
	if code != http.StatusOK {
		t.Fatalf("the first admin cannot log in: %d", code)
	}
	if _, who, _ := env.m.rest(t, "GET", "/v1/auth/whoami", bossTok["accessToken"].(string), nil); who["role"] != "ROLE_ADMIN" {
		t.Errorf("the first admin's role: %v", who["role"])
	}
	// A taken slug is refused in words.
	if code, body, _ := op.post(t, "/console/tenants", url.Values{"slug": {"globex"}, "name": {"Again"}}); code != http.StatusConflict || !strings.Contains(body, "already exists") {
		t.Errorf("a taken slug: %d", code)
	}
	if code, _, _ := op.post(t, "/console/tenants", url.Values{"slug": {""}, "name": {"x"}}); code != http.StatusBadRequest {
		t.Errorf("an empty slug: %d, want 400", code)
	}

	// The admin and the analyst see no Tenants link and are refused page and forms.
	for who, c := range map[string]*consoleClient{"admin": env.admin, "analyst": env.analyst} {
		if _, home, _ := c.get(t, "/console/"); strings.Contains(home, `href="/console/tenants"`) {
			t.Errorf("the %s sees the Tenants link", who)
		}
		if code, _, _ := c.get(t, "/console/tenants"); code != http.StatusForbidden {
			t.Errorf("%s tenants page: %d, want 403", who, code)
		}
		for path, form := range map[string]url.Values{
			"/console/tenants":                        {"slug": {"initech-" + who}, "name": {"Initech"}},
			"/console/tenants/" + id + "/suspend":     nil,
			"/console/tenants/" + id + "/invitations": {"email": {"mole@globex.example"}},
		} {
			if code, _, _ := c.post(t, path, form); code != http.StatusForbidden {
				t.Errorf("%s POST %s: %d, want 403", who, path, code)
			}
		}
	}

	// Suspend → the API says suspended, and the tenant's admin is locked out within seconds.
	code, _, hdr = op.post(t, "/console/tenants/"+id+"/suspend", nil)
	if code != http.StatusSeeOther || hdr.Get("Location") != "/console/tenants" {
		t.Fatalf("suspend: %d %q", code, hdr.Get("Location"))
	}
	if _, tn, _ := env.m.rest(t, "GET", "/v1/tenants/"+id, opToken, nil); tn["state"] != "STATE_SUSPENDED" {
		t.Errorf("after suspending the API says %v", tn["state"])
	}
	meshtest.Eventually(t, 20*time.Second, func() bool {
		code, _, _ := env.m.rest(t, "GET", "/v1/auth/whoami", bossTok["accessToken"].(string), nil)
		return code == http.StatusUnauthorized
	}, "the suspended tenant's admin token still works")
	if _, body, _ := op.get(t, "/console/tenants"); strings.Contains(body, `/console/tenants/`+id+`/suspend"`) {
		t.Errorf("the page offers to suspend a suspended tenant")
	}
}
