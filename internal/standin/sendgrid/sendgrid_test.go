package sendgrid

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
)

func newServer(t *testing.T) (*Server, *httptest.Server) {
	t.Helper()
	s, err := New(Config{APIKey: "SG.k"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(func() { s.Close(); srv.Close() })
	return s, srv
}

func do(t *testing.T, method, url, key, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestErrorShape checks the stand-in answers errors as SendGrid documents them:
// {"errors":[{"message":…,"field":…,"help":…}]}.
func TestErrorShape(t *testing.T) {
	t.Parallel()
	_, srv := newServer(t)
	resp, body := do(t, http.MethodPost, srv.URL+"/v3/mail/send", "SG.wrong", `{}`)
	if resp.StatusCode != 401 || !strings.Contains(string(body), `"errors":[{"message":"The provided authorization grant is invalid, expired, or revoked","field":null,"help":null}]`) {
		t.Fatalf("401: %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, http.MethodPost, srv.URL+"/v3/mail/send", "SG.k", `{"personalizations":[{"to":[]}],"content":[{"type":"text/html","value":"x"},{"type":"text/plain","value":"y"}]}`)
	var out struct {
		Errors []struct {
			Message string  `json:"message"`
			Field   *string `json:"field"`
		} `json:"errors"`
	}
	if resp.StatusCode != 400 || json.Unmarshal(body, &out) != nil {
		t.Fatalf("400: %d %s", resp.StatusCode, body)
	}
	fields := map[string]bool{}
	for _, e := range out.Errors {
		if e.Field != nil {
			fields[*e.Field] = true
		}
	}
	for _, f := range []string{"personalizations.0.to", "subject", "from", "content"} {
		if !fields[f] {
			t.Errorf("no error for %s in %s", f, body)
		}
	}
	if resp, _ := do(t, http.MethodPost, srv.URL+"/v3/mail/send", "SG.k", `{nope`); resp.StatusCode != 400 {
		t.Fatalf("malformed json: %d", resp.StatusCode)
	}
	if resp, _ := do(t, http.MethodGet, srv.URL+"/v3/user/webhooks/event/settings/signed", "", ""); resp.StatusCode != 401 {
		t.Fatalf("public key without auth: %d", resp.StatusCode)
	}
}

// TestPersonalizations checks one outbox entry per recipient and the per-recipient counts
// and filter of GET /outbox.
func TestPersonalizations(t *testing.T) {
	t.Parallel()
	s, srv := newServer(t)
	send := `{"personalizations":[{"to":[{"email":"A@example.com"},{"email":"b@example.com"}],"custom_args":{"k":"p"}},{"to":[{"email":"a@example.com"}],"subject":"own"}],
	 "from":{"email":"f@shop.example"},"subject":"s","content":[{"type":"text/plain","value":"t"}],"custom_args":{"k":"m","m":"1"}}`
	resp, _ := do(t, http.MethodPost, srv.URL+"/v3/mail/send", "SG.k", send)
	if resp.StatusCode != 202 || resp.Header.Get("X-Message-Id") == "" || strings.Contains(resp.Header.Get("X-Message-Id"), ".") {
		t.Fatalf("send: %d, X-Message-Id %q", resp.StatusCode, resp.Header.Get("X-Message-Id"))
	}
	if s.Total() != 3 || s.Count("a@example.com") != 2 || s.Count("B@example.com") != 1 {
		t.Fatalf("outbox total %d, a %d, b %d", s.Total(), s.Count("a@example.com"), s.Count("b@example.com"))
	}
	msgs := s.Messages()
	if msgs[0].CustomArgs["k"] != "p" || msgs[0].CustomArgs["m"] != "1" || msgs[2].Subject != "own" || msgs[2].CustomArgs["k"] != "m" {
		t.Fatalf("personalization merge: %+v", msgs)
	}
	_, body := do(t, http.MethodGet, srv.URL+"/outbox?to=a@example.com&limit=1", "", "")
	var out struct {
		Total           int            `json:"total"`
		ByRecipient     map[string]int `json:"by_recipient"`
		FirstAcceptedAt time.Time      `json:"first_accepted_at"`
		LastAcceptedAt  time.Time      `json:"last_accepted_at"`
		Messages        []Message      `json:"messages"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	if out.Total != 3 || out.ByRecipient["a@example.com"] != 2 || len(out.ByRecipient) != 1 || len(out.Messages) != 1 || out.Messages[0].Subject != "own" {
		t.Fatalf("outbox answer %s", body)
	}
	if !out.FirstAcceptedAt.Equal(msgs[0].AcceptedAt) || !out.LastAcceptedAt.Equal(msgs[2].AcceptedAt) {
		t.Fatalf("outbox times %v..%v, want the first and last message's", out.FirstAcceptedAt, out.LastAcceptedAt)
	}
	if resp, _ := do(t, http.MethodDelete, srv.URL+"/outbox", "", ""); resp.StatusCode != 204 || s.Total() != 0 {
		t.Fatalf("delete: %d, total %d", resp.StatusCode, s.Total())
	}
}

// TestEventsForEverySend sends 300 messages and checks the webhook receives processed and
// delivered for each, in batches, every post signed.
func TestEventsForEverySend(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	got := map[string]int{}
	posts := 0
	s, srv := newServer(t)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sig, err := base64.StdEncoding.DecodeString(r.Header.Get("X-Twilio-Email-Event-Webhook-Signature"))
		h := sha256.Sum256(append([]byte(r.Header.Get("X-Twilio-Email-Event-Webhook-Timestamp")), body...))
		if err != nil || !ecdsa.VerifyASN1(&s.key.PublicKey, h[:], sig) {
			http.Error(w, "bad signature", http.StatusForbidden)
			return
		}
		var events []map[string]any
		if err := json.Unmarshal(body, &events); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		mu.Lock()
		posts++
		for _, e := range events {
			got[e["email"].(string)+"/"+e["event"].(string)]++
		}
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	s.SetWebhookURL(hook.URL)
	for i := range 300 {
		body := fmt.Sprintf(`{"personalizations":[{"to":[{"email":"r%d@example.com"}]}],"from":{"email":"f@shop.example"},"subject":"s","content":[{"type":"text/plain","value":"t"}]}`, i)
		if resp, b := do(t, http.MethodPost, srv.URL+"/v3/mail/send", "SG.k", body); resp.StatusCode != 202 {
			t.Fatalf("send %d: %d %s", i, resp.StatusCode, b)
		}
	}
	meshtest.Eventually(t, 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 600
	}, "600 distinct events")
	mu.Lock()
	defer mu.Unlock()
	for i := range 300 {
		for _, kind := range []string{"processed", "delivered"} {
			if n := got[fmt.Sprintf("r%d@example.com/%s", i, kind)]; n != 1 {
				t.Fatalf("r%d %s posted %d times", i, kind, n)
			}
		}
	}
	if posts == 0 || posts > 300 {
		t.Fatalf("%d posts", posts)
	}
}
