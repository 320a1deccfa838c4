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

	dtwilio "github.com/campaignmesh/campaignmesh/services/delivery/twilio"
)

// POST /inbound posts Twilio's incoming-message webhook, signed with the auth token so that
// the delivery service's validator (an implementation of its own) accepts it, and reports the
// webhook's answer.
func TestInboundPostsASignedWebhook(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		got  url.Values
		good bool
	)
	v := dtwilio.NewValidator("tok")
	var hookURL string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		mu.Lock()
		got, good = r.PostForm, v.Validate(hookURL+r.URL.RequestURI(), r.PostForm, r.Header.Get(dtwilio.SignatureHeader))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)
	hookURL = hook.URL
	s, err := New(Config{AccountSID: acct, AuthToken: "tok", InboundURL: hook.URL + "/webhooks/twilio/inbound?cm_tenant=x"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(func() { s.Close(); srv.Close() })

	resp, err := http.Post(srv.URL+"/inbound", "application/json", strings.NewReader(`{"from":"+14155550100","to":"+15005550006","body":"STOP"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res InboundResult
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &res); err != nil || res.Status != http.StatusNoContent || !strings.HasPrefix(res.SID, "SM") {
		t.Fatalf("inbound answer %s (%v)", b, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !good || got.Get("From") != "+14155550100" || got.Get("To") != "+15005550006" || got.Get("Body") != "STOP" || got.Get("AccountSid") != acct {
		t.Errorf("webhook form %v, signature valid %v", got, good)
	}

	// Without a configured URL, or without the fields, nothing is posted.
	noURL, _ := New(Config{AccountSID: acct, AuthToken: "tok"})
	t.Cleanup(noURL.Close)
	rec := httptest.NewRecorder()
	noURL.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/inbound", strings.NewReader(`{"from":"a","to":"b","body":"STOP"}`)))
	if rec.Code != http.StatusConflict {
		t.Errorf("no inbound url: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/inbound", strings.NewReader(`{"body":"STOP"}`)))
	if rec.Code != http.StatusBadRequest {
		t.Errorf("no from/to: %d", rec.Code)
	}
}
