package sendgrid

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
)

// The Email Activity filter checks the key and its limit, refuses what it cannot parse, and
// matches custom arguments, addresses and ids joined by AND.
func TestActivityFilter(t *testing.T) {
	t.Parallel()
	_, srv := newServer(t)
	send := func(to, ref string) {
		body := `{"personalizations":[{"to":[{"email":"` + to + `"}]}],"from":{"email":"a@shop.example"},"subject":"s","content":[{"type":"text/plain","value":"x"}],"custom_args":{"cm_ref":"` + ref + `"}}`
		if resp, b := do(t, http.MethodPost, srv.URL+"/v3/mail/send", "SG.k", body); resp.StatusCode != 202 {
			t.Fatalf("send: %d %s", resp.StatusCode, b)
		}
	}
	send("ann@example.com", "1")
	send("bob@example.com", "2")
	get := func(key, query, limit string) (int, []map[string]any) {
		t.Helper()
		v := url.Values{"query": {query}, "limit": {limit}}
		resp, b := do(t, http.MethodGet, srv.URL+"/v3/messages?"+v.Encode(), key, "")
		var out struct{ Messages []map[string]any }
		_ = json.Unmarshal(b, &out)
		return resp.StatusCode, out.Messages
	}
	if code, _ := get("SG.wrong", "", "10"); code != 401 {
		t.Fatalf("wrong key: %d", code)
	}
	for _, limit := range []string{"", "0", "1001", "x"} {
		if code, _ := get("SG.k", "", limit); code != 400 {
			t.Fatalf("limit %q: %d", limit, code)
		}
	}
	if code, _ := get("SG.k", `unique_args['cm_ref']="1" OR to_email="x"`, "10"); code != 400 {
		t.Fatalf("OR query: %d", code)
	}
	code, ms := get("SG.k", `unique_args['cm_ref']="2"`, "10")
	if code != 200 || len(ms) != 1 || ms[0]["to_email"] != "bob@example.com" {
		t.Fatalf("by ref: %d %v", code, ms)
	}
	id := ms[0]["msg_id"].(string)
	if _, ms = get("SG.k", `(to_email="bob@example.com" AND msg_id="`+id+`")`, "10"); len(ms) != 1 {
		t.Fatalf("by address and id: %v", ms)
	}
	if _, ms = get("SG.k", `to_email="ann@example.com" AND unique_args['cm_ref']="2"`, "10"); len(ms) != 0 {
		t.Fatalf("terms are not ANDed: %v", ms)
	}
	if _, ms = get("SG.k", "", "1"); len(ms) != 1 || ms[0]["to_email"] != "bob@example.com" {
		t.Fatalf("newest first with limit 1: %v", ms)
	}
}
