package e2e

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
)

var consoleSecret = regexp.MustCompile(`<code id="secret">([^<]+)</code>`)

// consoleKeys: the API keys screen lists the tenant's keys, creates one whose secret is shown
// exactly once and works over REST, refuses scopes beyond the creator's, and revokes (the key
// then gets 401); an analyst sees none of it and is refused every form.
func consoleKeys(t *testing.T, env *consoleEnv) {
	const evil = `<img src=x onerror=alert(1)>`
	const escaped = `&lt;img src=x onerror=alert(1)&gt;`
	admin := env.admin

	code, body, _ := admin.get(t, "/console/keys")
	if code != http.StatusOK {
		t.Fatalf("keys page: %d %s", code, body)
	}
	for _, want := range []string{`>API keys</a>`, `<button type="submit">Create key</button>`, `name="name"`, `>Expires <input`,
		`value="events.write"`, `value="apikeys.manage"`, "https://" + strings.TrimPrefix(env.m.url(""), "https://") + "/v1/track"} {
		if !strings.Contains(body, want) {
			t.Errorf("keys page lacks %q", want)
		}
	}
	// Only the admin's own permissions are offered.
	if strings.Contains(body, `value="tenants.manage"`) || strings.Contains(body, `value="signing_keys.manage"`) {
		t.Errorf("keys page offers permissions the admin does not hold")
	}
	// The write-key preset checks events.write alone.
	_, preset, _ := admin.get(t, "/console/keys?preset=write")
	if checked := regexp.MustCompile(`value="([a-z_.]+)" id="[^"]+" checked`).FindAllStringSubmatch(preset, -1); len(checked) != 1 || checked[0][1] != "events.write" {
		t.Errorf("write-key preset checks %v, want events.write only", checked)
	}

	// Create: 303 back to the list, the secret once on the next page and never again.
	tomorrow := time.Now().UTC().AddDate(0, 0, 1).Format(time.DateOnly)
	code, _, hdr := admin.post(t, "/console/keys", url.Values{"name": {evil}, "scope": {"campaigns.read"}, "expires": {tomorrow}})
	if code != http.StatusSeeOther || hdr.Get("Location") != "/console/keys" {
		t.Fatalf("create key: %d %q", code, hdr.Get("Location"))
	}
	_, body, _ = admin.get(t, "/console/keys")
	m := consoleSecret.FindStringSubmatch(body)
	if m == nil || !strings.HasPrefix(m[1], "cmk_") {
		t.Fatalf("the new key's secret is not shown")
	}
	secret := m[1]
	if !strings.Contains(body, `data-copy="secret">Copy</button>`) {
		t.Errorf("no Copy button beside the secret")
	}
	if strings.Contains(body, evil) || !strings.Contains(body, escaped) {
		t.Errorf("the key's name is not escaped on the keys page")
	}
	if _, again, _ := admin.get(t, "/console/keys"); strings.Contains(again, `id="secret"`) || strings.Contains(again, secret) {
		t.Errorf("the secret is shown a second time")
	}
	// It works over REST within its scope, and not beyond.
	if code, _, _ := env.m.rest(t, "GET", "/v1/campaigns", secret, nil); code != http.StatusOK {
		t.Errorf("the new key cannot list campaigns: %d", code)
	}
	if code, _, _ := env.m.rest(t, "GET", "/v1/users", secret, nil); code != http.StatusForbidden {
		t.Errorf("the new key (campaigns.read) lists users: %d", code)
	}
	// The API shows it as created, with its expiry at the end of the chosen day (UTC).
	id, key := "", map[string]any{}
	_, list, _ := env.m.rest(t, "GET", "/v1/apikeys?pageSize=1000", env.token, nil)
	keys, _ := list["apiKeys"].([]any)
	for _, k := range keys {
		k := k.(map[string]any)
		if k["name"] == evil {
			id, key = k["id"].(string), k
		}
	}
	if id == "" {
		t.Fatalf("the created key is not in the API's list")
	}
	if exp, _ := key["expireTime"].(string); !strings.HasPrefix(exp, time.Now().UTC().AddDate(0, 0, 2).Format(time.DateOnly)+"T00:00:00") {
		t.Errorf("expiry %q, want the end of %s", exp, tomorrow)
	}
	if !strings.Contains(body, "/console/keys/"+id+"/revoke") || !strings.Contains(body, `data-confirm="Revoke key `+escaped) {
		t.Errorf("no confirmed Revoke form for the key")
	}

	// Scopes beyond the creator's are refused (by auth), in words.
	code, body, _ = admin.post(t, "/console/keys", url.Values{"name": {"too much"}, "scope": {"tenants.manage"}})
	if code != http.StatusBadRequest || !strings.Contains(body, "not one of your own permissions") {
		t.Errorf("key with a scope beyond the admin's: %d", code)
	}
	// Bad forms are 400 in words, never 500.
	for _, form := range []url.Values{
		{"name": {""}, "scope": {"campaigns.read"}},
		{"name": {strings.Repeat("n", 101)}, "scope": {"campaigns.read"}},
		{"name": {"k"}},
		{"name": {"k"}, "scope": {"campaigns.read"}, "expires": {"yesterday"}},
		{"name": {"k"}, "scope": {"campaigns.read"}, "expires": {"2001-01-01"}},
	} {
		if code, _, _ := admin.post(t, "/console/keys", form); code != http.StatusBadRequest {
			t.Errorf("form %v: %d, want 400", form, code)
		}
	}
	if code, _, _ := admin.get(t, "/console/keys?page_token="+strings.Repeat("x", 2000)); code != http.StatusBadRequest {
		t.Errorf("an overlong page token: %d, want 400", code)
	}

	// The analyst sees no link and is refused the page and every form; the key stays.
	_, home, _ := env.analyst.get(t, "/console/")
	if strings.Contains(home, `href="/console/keys"`) {
		t.Errorf("the analyst sees the API keys link")
	}
	if code, _, _ := env.analyst.get(t, "/console/keys"); code != http.StatusForbidden {
		t.Errorf("analyst keys page: %d, want 403", code)
	}
	if code, _, _ := env.analyst.post(t, "/console/keys", url.Values{"name": {"mine"}, "scope": {"campaigns.read"}}); code != http.StatusForbidden {
		t.Errorf("analyst creates a key: %d, want 403", code)
	}
	if code, _, _ := env.analyst.post(t, "/console/keys/"+id+"/revoke", nil); code != http.StatusForbidden {
		t.Errorf("analyst revokes a key: %d, want 403", code)
	}
	if code, _, _ := env.m.rest(t, "GET", "/v1/campaigns", secret, nil); code != http.StatusOK {
		t.Errorf("the key stopped working after the analyst's refused revoke: %d", code)
	}

	// Revoke: the key gets 401 within seconds, and the list says revoked with no button.
	code, _, hdr = admin.post(t, "/console/keys/"+id+"/revoke", nil)
	if code != http.StatusSeeOther || hdr.Get("Location") != "/console/keys" {
		t.Fatalf("revoke: %d %q", code, hdr.Get("Location"))
	}
	meshtest.Eventually(t, 30*time.Second, func() bool {
		code, _, _ := env.m.rest(t, "GET", "/v1/campaigns", secret, nil)
		return code == http.StatusUnauthorized
	}, "the revoked key still works")
	_, body, _ = admin.get(t, "/console/keys")
	if !strings.Contains(body, "was revoked") || strings.Contains(body, "/console/keys/"+id+"/revoke") {
		t.Errorf("the list still offers to revoke the revoked key")
	}
	if code, _, _ := admin.post(t, "/console/keys/not-an-id/revoke", nil); code != http.StatusBadRequest {
		t.Errorf("revoke a malformed id: %d, want 400", code)
	}
}
