package twilio

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
)

const acct = "AC1"

func newServer(t *testing.T) (*Server, *httptest.Server) {
	t.Helper()
	s, err := New(Config{AccountSID: acct, AuthToken: "tok", APIKeys: map[string]string{"SK1": "sec"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(func() { s.Close(); srv.Close() })
	return s, srv
}

func call(t *testing.T, method, u, user, pass string, form url.Values) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("answer is not json: %s", b)
	}
	return resp.StatusCode, out
}

// TestErrorShape checks Twilio's error JSON: code, message, more_info, status.
func TestErrorShape(t *testing.T) {
	t.Parallel()
	_, srv := newServer(t)
	messages := srv.URL + "/2010-04-01/Accounts/" + acct + "/Messages.json"
	cases := []struct {
		name       string
		user, pass string
		url        string
		form       url.Values
		status     int
		code       float64
	}{
		{"no auth", "", "", messages, url.Values{}, 401, 20003},
		{"wrong token", acct, "nope", messages, url.Values{}, 401, 20003},
		{"api key of another", "SK2", "sec", messages, url.Values{}, 401, 20003},
		{"other account", acct, "tok", strings.Replace(messages, acct, "AC2", 1), url.Values{}, 404, 20404},
		{"no to", "SK1", "sec", messages, url.Values{"From": {"+1555"}, "Body": {"x"}}, 400, 21604},
		{"no from", acct, "tok", messages, url.Values{"To": {"+15551234567"}, "Body": {"x"}}, 400, 21603},
		{"no body", acct, "tok", messages, url.Values{"To": {"+15551234567"}, "From": {"+15550001111"}}, 400, 21602},
		{"long body", acct, "tok", messages, url.Values{"To": {"+15551234567"}, "From": {"+15550001111"}, "Body": {strings.Repeat("x", 1601)}}, 400, 21617},
		{"bad callback", acct, "tok", messages, url.Values{"To": {"+15551234567"}, "From": {"+15550001111"}, "Body": {"x"}, "StatusCallback": {"ftp://x"}}, 400, 21609},
	}
	for _, tc := range cases {
		status, out := call(t, http.MethodPost, tc.url, tc.user, tc.pass, tc.form)
		if status != tc.status || out["code"] != tc.code || out["status"] != float64(tc.status) || out["message"] == "" || !strings.HasPrefix(out["more_info"].(string), "https://www.twilio.com/docs/errors/") {
			t.Errorf("%s: %d %v, want %d code %v", tc.name, status, out, tc.status, tc.code)
		}
	}
}

func TestListPaging(t *testing.T) {
	t.Parallel()
	s, srv := newServer(t)
	messages := srv.URL + "/2010-04-01/Accounts/" + acct + "/Messages.json"
	for range 3 {
		if status, out := call(t, http.MethodPost, messages, acct, "tok", url.Values{"To": {"+15551234567"}, "MessagingServiceSid": {"MG1"}, "Body": {"x"}}); status != 201 || out["status"] != "accepted" {
			t.Fatalf("create: %d %v", status, out)
		}
	}
	if s.Count("+15551234567") != 3 {
		t.Fatalf("count %d", s.Count("+15551234567"))
	}
	status, out := call(t, http.MethodGet, messages+"?To=%2B15551234567&PageSize=2", acct, "tok", nil)
	next, _ := out["next_page_uri"].(string)
	if status != 200 || len(out["messages"].([]any)) != 2 || next == "" {
		t.Fatalf("page 0: %d %v", status, out)
	}
	status, out = call(t, http.MethodGet, srv.URL+next, acct, "tok", nil)
	if status != 200 || len(out["messages"].([]any)) != 1 || out["next_page_uri"] != nil {
		t.Fatalf("page 1: %d %v", status, out)
	}
	if status, out = call(t, http.MethodGet, messages+"?DateSent=yesterday", acct, "tok", nil); status != 400 {
		t.Fatalf("bad DateSent: %d %v", status, out)
	}
}

// TestCallbacksInOrderPerMessage creates 200 messages and checks every one gets "sent"
// then "delivered", each once, signed.
func TestCallbacksInOrderPerMessage(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	seen := map[string][]string{}
	s, srv := newServer(t)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.Header.Get("X-Twilio-Signature") != s.sign("http://"+r.Host+r.URL.RequestURI(), r.PostForm) {
			http.Error(w, "bad signature", http.StatusForbidden)
			return
		}
		mu.Lock()
		seen[r.PostForm.Get("MessageSid")] = append(seen[r.PostForm.Get("MessageSid")], r.PostForm.Get("MessageStatus"))
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	messages := srv.URL + "/2010-04-01/Accounts/" + acct + "/Messages.json"
	for range 200 {
		if status, out := call(t, http.MethodPost, messages, acct, "tok", url.Values{"To": {"+15551234567"}, "From": {"+15550001111"}, "Body": {"x"}, "StatusCallback": {hook.URL + "/cb"}}); status != 201 {
			t.Fatalf("create: %d %v", status, out)
		}
	}
	meshtest.Eventually(t, 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, st := range seen {
			n += len(st)
		}
		return n == 400
	}, "400 callbacks")
	mu.Lock()
	defer mu.Unlock()
	for sid, st := range seen {
		if len(st) != 2 || st[0] != "sent" || st[1] != "delivered" {
			t.Fatalf("%s got %v", sid, st)
		}
	}
}
