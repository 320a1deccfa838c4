package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
)

// consoleTeam: the team screen lists the tenant's users and invitations; each action (change
// role, disable, unlock, revoke sessions, invite, revoke an invitation) reaches auth, which
// the API then shows; the invitation's token is shown once and lets the invitee join; an
// analyst (no users.read) is refused the page and every form.
func consoleTeam(t *testing.T, env *consoleEnv) {
	const evil = `<img src=x onerror=alert(1)>`
	const escaped = `&lt;img src=x onerror=alert(1)&gt;`
	admin := env.admin
	rest := func(method, path, token string, body any) (int, map[string]any) {
		t.Helper()
		code, out, _ := env.m.rest(t, method, path, token, body)
		return code, out
	}
	login := func(email, password string) (int, map[string]any) {
		t.Helper()
		return rest("POST", "/v1/auth/login", "", map[string]any{"tenant": env.tenant, "email": email, "password": password})
	}
	posted := func(path string, form url.Values) {
		t.Helper()
		code, body, hdr := admin.post(t, path, form)
		if code != http.StatusSeeOther || hdr.Get("Location") != "/console/team" {
			t.Fatalf("POST %s: %d %q %s", path, code, hdr.Get("Location"), body)
		}
	}

	// A user whose display name is markup, signed in over REST (a session to revoke).
	code, user := rest("POST", "/v1/users", env.token, map[string]any{
		"user": map[string]any{"email": "eve@acme.example", "displayName": evil, "role": "ROLE_VIEWER"}, "password": "eve has a long password"})
	if code != http.StatusOK {
		t.Fatalf("create user: %d %v", code, user)
	}
	id := user["id"].(string)
	code, eve := login("eve@acme.example", "eve has a long password")
	if code != http.StatusOK {
		t.Fatalf("eve logs in: %d", code)
	}

	code, body, _ := admin.get(t, "/console/team")
	if code != http.StatusOK {
		t.Fatalf("team page: %d %s", code, body)
	}
	for _, want := range []string{"ana@acme.example", "eve@acme.example", escaped, `action="/console/team/users/` + id + `/role"`,
		`action="/console/team/users/` + id + `/disable"`, `action="/console/team/users/` + id + `/unlock"`,
		`action="/console/team/users/` + id + `/sessions/revoke"`, `action="/console/team/invitations"`, `>Invite</button>`} {
		if !strings.Contains(body, want) {
			t.Errorf("team page lacks %q", want)
		}
	}
	if strings.Contains(body, evil) {
		t.Errorf("a display name is not escaped on the team page")
	}
	if !strings.Contains(body, `data-confirm="Disable eve@acme.example?`) {
		t.Errorf("disabling is not confirmed")
	}

	// Change role → the API shows the new role, and her old token stops working.
	posted("/console/team/users/"+id+"/role", url.Values{"role": {"manager"}})
	if _, u := rest("GET", "/v1/users/"+id, env.token, nil); u["role"] != "ROLE_MANAGER" {
		t.Errorf("after the role change the API says %v", u["role"])
	}
	meshtest.Eventually(t, 20*time.Second, func() bool {
		code, _ := rest("GET", "/v1/auth/whoami", eve["accessToken"].(string), nil)
		return code == http.StatusUnauthorized
	}, "eve's token still works after her role changed")
	if code, _, _ := admin.post(t, "/console/team/users/"+id+"/role", url.Values{"role": {"platform_operator"}}); code != http.StatusBadRequest {
		t.Errorf("role platform_operator: %d, want 400", code)
	}

	// Revoke sessions → her refresh token no longer works.
	code, eve = login("eve@acme.example", "eve has a long password")
	if code != http.StatusOK {
		t.Fatalf("eve logs in again: %d", code)
	}
	posted("/console/team/users/"+id+"/sessions/revoke", nil)
	if code, _ := rest("POST", "/v1/auth/refresh", "", map[string]any{"refreshToken": eve["refreshToken"]}); code == http.StatusOK {
		t.Errorf("eve's session survived the revocation")
	}

	// Unlock → auth ran UnlockUser for her (its audit record).
	posted("/console/team/users/"+id+"/unlock", nil)
	meshtest.Eventually(t, 20*time.Second, func() bool {
		q := url.Values{"method": {"/campaignmesh.auth.v1.AuthService/UnlockUser"}, "resource": {id}, "outcome": {"OK"}}
		_, page := rest("GET", "/v1/audit/records?"+q.Encode(), env.token, nil)
		records, _ := page["records"].([]any)
		return len(records) == 1
	}, "no audit record of the unlock")

	// Disable → the API says disabled and she cannot log in; the page offers no Disable.
	posted("/console/team/users/"+id+"/disable", nil)
	if _, u := rest("GET", "/v1/users/"+id, env.token, nil); u["state"] != "STATE_DISABLED" {
		t.Errorf("after disabling the API says %v", u["state"])
	}
	if code, _ := login("eve@acme.example", "eve has a long password"); code == http.StatusOK {
		t.Errorf("a disabled user logs in")
	}
	if _, body, _ := admin.get(t, "/console/team"); strings.Contains(body, `/console/team/users/`+id+`/disable"`) {
		t.Errorf("the page offers to disable a disabled user")
	}

	// Invite → the token once; the invitee joins with it.
	posted("/console/team/invitations", url.Values{"email": {"gus@acme.example"}, "role": {"analyst"}, "days": {"3"}})
	_, body, _ = admin.get(t, "/console/team")
	m := consoleSecret.FindStringSubmatch(body)
	if m == nil || !strings.HasPrefix(m[1], "cmi_") {
		t.Fatalf("the invitation's token is not shown")
	}
	if !strings.Contains(body, "gus@acme.example") || !strings.Contains(body, "cmesh invitations accept") {
		t.Errorf("the team page does not list the invitation or say how to accept it")
	}
	if _, again, _ := admin.get(t, "/console/team"); strings.Contains(again, m[1]) {
		t.Errorf("the invitation token is shown a second time")
	}
	if code, acc := rest("POST", "/v1/invitations:accept", "", map[string]any{"token": m[1], "displayName": "Gus", "password": "gus has a long password"}); code != http.StatusOK {
		t.Fatalf("accept the invitation: %d %v", code, acc)
	}
	if code, _ := login("gus@acme.example", "gus has a long password"); code != http.StatusOK {
		t.Errorf("the invitee cannot log in: %d", code)
	}

	// Revoke a pending invitation → the API says revoked.
	posted("/console/team/invitations", url.Values{"email": {"hal@acme.example"}, "role": {"viewer"}})
	_, list := rest("GET", "/v1/invitations?pageSize=1000", env.token, nil)
	invID := ""
	invitations, _ := list["invitations"].([]any)
	for _, i := range invitations {
		if i := i.(map[string]any); i["email"] == "hal@acme.example" {
			invID = i["id"].(string)
		}
	}
	if invID == "" {
		t.Fatalf("the invitation is not in the API's list")
	}
	if _, body, _ := admin.get(t, "/console/team"); !strings.Contains(body, `action="/console/team/invitations/`+invID+`/revoke"`) {
		t.Errorf("no Revoke form for the pending invitation")
	}
	posted("/console/team/invitations/"+invID+"/revoke", nil)
	_, list = rest("GET", "/v1/invitations?pageSize=1000", env.token, nil)
	for _, i := range list["invitations"].([]any) {
		if i := i.(map[string]any); i["id"] == invID && i["state"] != "STATE_REVOKED" {
			t.Errorf("the revoked invitation is %v in the API", i["state"])
		}
	}
	// Bad forms are 400 in words.
	for _, form := range []url.Values{
		{"email": {"not an email"}, "role": {"viewer"}},
		{"email": {"x@acme.example"}, "role": {"root"}},
		{"email": {"x@acme.example"}, "role": {"viewer"}, "days": {"365"}},
	} {
		if code, _, _ := admin.post(t, "/console/team/invitations", form); code != http.StatusBadRequest {
			t.Errorf("invite %v: %d, want 400", form, code)
		}
	}

	// The analyst sees no link and is refused the page and every form; nothing changes.
	_, home, _ := env.analyst.get(t, "/console/")
	if strings.Contains(home, `href="/console/team"`) {
		t.Errorf("the analyst sees the Team link")
	}
	if code, _, _ := env.analyst.get(t, "/console/team"); code != http.StatusForbidden {
		t.Errorf("analyst team page: %d, want 403", code)
	}
	_, gus := rest("GET", "/v1/users?pageSize=1000", env.token, nil)
	gusID := ""
	for _, u := range gus["users"].([]any) {
		if u := u.(map[string]any); u["email"] == "gus@acme.example" {
			gusID = u["id"].(string)
		}
	}
	for path, form := range map[string]url.Values{
		"/console/team/users/" + gusID + "/role":            {"role": {"admin"}},
		"/console/team/users/" + gusID + "/disable":         nil,
		"/console/team/users/" + gusID + "/unlock":          nil,
		"/console/team/users/" + gusID + "/sessions/revoke": nil,
		"/console/team/invitations":                         {"email": {"ivy@acme.example"}, "role": {"viewer"}},
		"/console/team/invitations/" + invID + "/revoke":    nil,
	} {
		if code, _, _ := env.analyst.post(t, path, form); code != http.StatusForbidden {
			t.Errorf("analyst POST %s: %d, want 403", path, code)
		}
	}
	if _, u := rest("GET", "/v1/users/"+gusID, env.token, nil); u["role"] != "ROLE_ANALYST" || u["state"] != "STATE_ACTIVE" {
		t.Errorf("the analyst's refused forms changed gus: %v", u)
	}
}
