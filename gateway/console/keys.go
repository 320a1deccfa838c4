package console

import (
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

// Limits of the keys screen: what the forms accept before asking auth (auth has its own
// rules: a name of 1-100 characters, scopes a subset of the caller's, expiry within 10 years).
const (
	maxKeyNameLen   = 100
	maxKeyScopes    = 32
	maxScopeLen     = 64
	adminPageSize   = 50
	maxPageTokenLen = 1024
	// writeKeyScope is the one scope of a write key (docs/sdk.md): a key that can only send
	// events, safe to ship in a browser or an app.
	writeKeyScope = "events.write"
)

func (c *Console) keyRoutes(m *http.ServeMux) {
	m.HandleFunc("GET "+Prefix+"keys", c.signedIn(c.keysPage))
	m.HandleFunc("POST "+Prefix+"keys", c.signedIn(c.createKey))
	m.HandleFunc("POST "+Prefix+"keys/{id}/revoke", c.signedIn(c.revokeKey))
}

// keyRow is one key of the list.
type keyRow struct {
	ID, Name, Prefix, Creator string
	Scopes                    []string
	Created, Expires, LastUse *timestamppb.Timestamp
	// State is "active", "revoked" or "expired".
	State string
}

// scopeChoice is one checkbox of the create form.
type scopeChoice struct {
	Name    string
	Checked bool
}

// keysData is the keys screen: one page of keys, the create form and the SDK snippets.
type keysData struct {
	Keys      []keyRow
	Next      string
	Scopes    []scopeChoice
	WriteKey  bool // the form is preset for a write key
	CanWrite  bool // the caller holds events.write (a write key is possible at all)
	SDK       sdkSnippets
	MinExpiry string // the first date a key may expire on (tomorrow), for the date field
}

func (c *Console) keysPage(rq *request) {
	token, ok := queryPageToken(rq)
	if !ok {
		return
	}
	resp, err := c.api.Auth.ListApiKeys(rq.ctx, &authv1.ListApiKeysRequest{PageSize: adminPageSize, PageToken: token})
	if err != nil {
		rq.fail(err)
		return
	}
	now := rq.now()
	d := keysData{Next: resp.GetNextPageToken(), SDK: sdkSnippets{Host: rq.r.Host}, MinExpiry: now.UTC().AddDate(0, 0, 1).Format(time.DateOnly),
		WriteKey: rq.r.URL.Query().Get("preset") == "write", CanWrite: rq.can(writeKeyScope)}
	for _, k := range resp.GetApiKeys() {
		d.Keys = append(d.Keys, keyRow{ID: k.GetId(), Name: k.GetName(), Prefix: k.GetSecretPrefix(), Creator: k.GetCreator(),
			Scopes: k.GetScopes(), Created: k.GetCreateTime(), Expires: k.GetExpireTime(), LastUse: k.GetLastUsedTime(),
			State: keyState(k, now)})
	}
	for _, p := range rq.who.GetPermissions() {
		d.Scopes = append(d.Scopes, scopeChoice{Name: p, Checked: d.WriteKey && p == writeKeyScope})
	}
	rq.render("keys", "API keys", d)
}

// keyState is what a key is now: revoked, expired or active.
func keyState(k *authv1.ApiKey, now time.Time) string {
	switch {
	case k.GetRevokeTime() != nil:
		return "revoked"
	case k.GetExpireTime() != nil && !k.GetExpireTime().AsTime().After(now):
		return "expired"
	}
	return "active"
}

// keyForm is the create form as posted.
type keyForm struct {
	Name   string
	Scopes []string
	Expire *time.Time
}

// parseKeyForm checks the create form's sizes and shapes; whether the scopes are the caller's
// to give is auth's decision. It returns a sentence for people when the form is unusable.
func parseKeyForm(name string, scopes []string, expires string, now time.Time) (keyForm, string) {
	f := keyForm{Name: strings.TrimSpace(name)}
	if f.Name == "" || !utf8.ValidString(f.Name) || utf8.RuneCountInString(f.Name) > maxKeyNameLen {
		return f, "Give the key a name of 1 to 100 characters."
	}
	if len(scopes) == 0 {
		return f, "Choose at least one permission for the key."
	}
	if len(scopes) > maxKeyScopes {
		return f, "Too many permissions were sent."
	}
	for _, s := range scopes {
		if s == "" || len(s) > maxScopeLen || !utf8.ValidString(s) {
			return f, "One of the permissions is not a permission."
		}
		if !slices.Contains(f.Scopes, s) {
			f.Scopes = append(f.Scopes, s)
		}
	}
	if expires = strings.TrimSpace(expires); expires != "" {
		day, err := time.Parse(time.DateOnly, expires)
		if err != nil {
			return f, "Enter the expiry as a date (YYYY-MM-DD), or leave it empty for a key that does not expire."
		}
		// The key works through the whole day it expires on (UTC).
		end := day.AddDate(0, 0, 1)
		if !end.After(now) {
			return f, "The expiry date has passed: choose a later one, or none."
		}
		f.Expire = &end
	}
	return f, ""
}

func (c *Console) createKey(rq *request) {
	f, problem := parseKeyForm(rq.r.PostFormValue("name"), rq.r.PostForm["scope"], rq.r.PostFormValue("expires"), rq.now())
	if problem != "" {
		rq.renderError(http.StatusBadRequest, problem)
		return
	}
	req := &authv1.CreateApiKeyRequest{Name: f.Name, Scopes: f.Scopes}
	if f.Expire != nil {
		req.ExpireTime = timestamppb.New(*f.Expire)
	}
	resp, err := c.api.Auth.CreateApiKey(rq.ctx, req)
	if err != nil {
		rq.fail(err)
		return
	}
	rq.doneWithSecret(Prefix+"keys", "The key “"+resp.GetApiKey().GetName()+"” was created. Its secret:", resp.GetSecret())
}

func (c *Console) revokeKey(rq *request) {
	id := rq.r.PathValue("id")
	if !validID(id) {
		rq.renderError(http.StatusBadRequest, "There is no such key.")
		return
	}
	k, err := c.api.Auth.RevokeApiKey(rq.ctx, &authv1.RevokeApiKeyRequest{Id: id})
	if err != nil {
		rq.fail(err)
		return
	}
	rq.done(Prefix+"keys", "The key “"+k.GetName()+"” was revoked: it stops working within seconds.")
}

// validID reports whether an id from a path looks like the services' ids (UUIDs) closely
// enough to pass on; the services check it exactly.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F' || r == '-') {
			return false
		}
	}
	return true
}

// queryPageToken is the page_token query parameter of a list, bounded; it answers 400 itself
// when the token cannot be one of ours.
func queryPageToken(rq *request) (string, bool) {
	token := rq.r.URL.Query().Get("page_token")
	if len(token) > maxPageTokenLen || !utf8.ValidString(token) || strings.ContainsAny(token, "\x00\r\n") {
		rq.renderError(http.StatusBadRequest, "This page link is not valid. Go back to the first page.")
		return "", false
	}
	return token, true
}
