package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDelivery runs issue 17's user flow on the real mesh with the provider stand-ins:
// contacts imported as CSV over REST, a sender identity, an email campaign in two variants with
// content, activated; the delivery process is killed with SIGKILL mid-send and restarted, and
// still every contact gets exactly one message, split by the variants' weights. A tracked link
// redirects and lands as a priced click of the right campaign and variant in the metrics and the
// pacing; an altered link and an unsigned webhook are refused. A one-click unsubscribe makes the
// next campaign skip the contact; a data-subject erasure removes a contact.
func TestDelivery(t *testing.T) {
	t.Parallel()
	m := startMeshWith(t, meshConfig{providers: true})
	_, login, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "admin.json"))
	token, _ := login["accessToken"].(string)
	must := func(what string, code int, body map[string]any) map[string]any {
		t.Helper()
		if code != http.StatusOK {
			t.Fatalf("%s: %d %v", what, code, body)
		}
		return body
	}

	// A verified sender identity.
	code, ident, _ := m.rest(t, "POST", "/v1/senderIdentities", token, map[string]any{"channel": "CHANNEL_EMAIL", "fromEmail": "news@acme.example", "fromName": "Acme"})
	identID, _ := must("create the sender identity", code, ident)["id"].(string)
	code, ident, _ = m.rest(t, "POST", "/v1/senderIdentities/"+identID+":verify", token, map[string]any{})
	must("verify the sender identity", code, ident)

	// Contacts: n with email consent, one without, as a CSV file over REST.
	const n = 10_000
	var csv strings.Builder
	csv.WriteString("email,first_name,consent.email\n")
	for i := range n {
		fmt.Fprintf(&csv, "c%05d@example.com,Ann%d,granted\n", i, i)
	}
	csv.WriteString("no-consent@example.com,Bob,\n")
	code, imported, _ := m.rest(t, "POST", "/v1/contacts:import", token, []byte(csv.String()), "Content-Type", "text/csv")
	if must("import contacts", code, imported); fmt.Sprint(imported["created"]) != fmt.Sprint(n+1) {
		t.Fatalf("import: %v, want %d created", imported, n+1)
	}

	// An email campaign in two variants, 70/30, with a budget; its content per variant.
	campaign := func(name string) string {
		t.Helper()
		code, c, _ := m.rest(t, "POST", "/v1/campaigns", token, map[string]any{
			"name": name, "channel": "CHANNEL_EMAIL",
			"schedule": map[string]any{"start": time.Now().UTC().Add(time.Hour).Format("2006-01-02T15:04:05"), "timeZone": "UTC"},
			"budget":   map[string]any{"totalMicros": "100000000", "currencyCode": "EUR", "pacing": "PACING_ASAP"},
			"variants": []map[string]any{{"name": "a", "weight": 70}, {"name": "b", "weight": 30}},
		})
		id, _ := must("create "+name, code, c)["id"].(string)
		code, content, _ := m.rest(t, "PUT", "/v1/campaigns/"+id+"/content", token, map[string]any{
			"channel": "CHANNEL_EMAIL", "senderIdentityId": identID,
			"clickCost": map[string]any{"amountMicros": "250000", "currencyCode": "EUR"},
			"variants": []map[string]any{
				{"name": "a", "subject": "A: hello {{first_name}}", "htmlBody": `<p>Hello {{first_name}}</p><p><a href="https://shop.example/sale">Sale</a></p>`, "textBody": "Hello {{first_name}}"},
				{"name": "b", "subject": "B: hi {{first_name}}", "htmlBody": `<p>Hi {{first_name}}</p><p><a href="https://shop.example/sale">Sale</a></p>`, "textBody": "Hi {{first_name}}"},
			},
		})
		must("set the content of "+name, code, content)
		for _, step := range []string{":schedule", ":activate"} {
			code, c, _ = m.rest(t, "POST", "/v1/campaigns/"+id+step, token, map[string]any{})
			must(step+" "+name, code, c)
		}
		return id
	}
	first := campaign("Spring sale")

	// SIGKILL of delivery mid-send, then a restart: the ledger resumes; nobody twice, nobody left.
	waitFor(t, "the first messages in the outbox", time.Minute, func() bool { return m.outbox(t).Total >= n/5 })
	m.procs["delivery"].kill9()
	killedAt := m.outbox(t).Total
	m.procs["delivery"].start()
	delivery := func(id string) map[string]any {
		_, d, _ := m.rest(t, "GET", "/v1/campaigns/"+id+"/delivery", token, nil)
		counts, _ := d["counts"].(map[string]any)
		return counts
	}
	waitFor(t, "every recipient of the first campaign settled", 2*time.Minute, func() bool {
		c := delivery(first)
		return fmt.Sprint(c["sent"]) == fmt.Sprint(n) && fmt.Sprint(c["skipped"]) == "1"
	})
	box := m.outbox(t)
	if box.Total != n || len(box.ByRecipient) != n {
		t.Fatalf("outbox: %d messages to %d recipients, want %d each once (killed at %d)", box.Total, len(box.ByRecipient), n, killedAt)
	}
	for to, k := range box.ByRecipient {
		if k != 1 {
			t.Fatalf("%s got %d messages", to, k)
		}
	}
	if box.ByRecipient["no-consent@example.com"] != 0 {
		t.Fatal("the contact without consent got a message")
	}
	t.Logf("%d messages, delivery killed after %d; each recipient once", box.Total, killedAt)
	all := m.outboxMessages(t, "")
	variantA := 0
	for _, msg := range all {
		if strings.HasPrefix(msg.Subject, "A: ") {
			variantA++
		}
	}
	if share := float64(variantA) / float64(len(all)); share < 0.65 || share > 0.75 {
		t.Errorf("variant a got %.1f %% of %d messages, want about 70 %%", 100*share, len(all))
	}

	// A tracked link: a 302 to the target, then a click of that campaign and variant, priced.
	msg := all[0]
	link := regexp.MustCompile(`href="(https://[^"]+/t/c/[^"]+)"`).FindStringSubmatch(msg.HTML)
	if link == nil {
		t.Fatalf("no tracked link in %q", msg.HTML)
	}
	noRedirect := &http.Client{Transport: m.httpc.Transport, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(u string) *http.Response {
		t.Helper()
		resp, err := noRedirect.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := get(link[1]); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://shop.example/sale" {
		t.Fatalf("tracked link: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	altered := link[1][:len(link[1])-3] + strings.Map(func(r rune) rune {
		if r == 'A' {
			return 'B'
		}
		return 'A'
	}, link[1][len(link[1])-3:])
	if resp := get(altered); resp.StatusCode != http.StatusNotFound {
		t.Errorf("altered link: %d, want 404", resp.StatusCode)
	}
	variant := "a"
	if strings.HasPrefix(msg.Subject, "B: ") {
		variant = "b"
	}
	waitFor(t, "the click in the campaign's metrics", time.Minute, func() bool {
		_, s, _ := m.rest(t, "GET", "/v1/analytics/summary?byVariant=true&campaignIds="+first, token, nil)
		for _, v := range asList(s["campaigns"]) {
			if v["variant"] == variant && fmt.Sprint(asMap(v["metrics"])["clicks"]) == "1" {
				return true
			}
		}
		return false
	})
	waitFor(t, "the click's cost in the campaign's spend", time.Minute, func() bool {
		_, p, _ := m.rest(t, "GET", "/v1/campaigns/"+first+"/pacing", token, nil)
		return fmt.Sprint(p["totalSpendMicros"]) == "250000"
	})

	// Provider webhooks are verified: an unsigned one is refused.
	req, _ := http.NewRequest(http.MethodPost, m.url("/webhooks/sendgrid"), strings.NewReader(`[{"event":"bounce","email":"c00001@example.com"}]`))
	req.Header.Set("Content-Type", "application/json")
	if resp, err := m.httpc.Do(req); err != nil || resp.StatusCode/100 == 2 {
		t.Errorf("unsigned webhook: %v %v, want refused", resp, err)
	} else {
		resp.Body.Close()
	}

	// One-click unsubscribe (RFC 8058) of one recipient: the next campaign skips them.
	leaver := all[1]
	unsub := leaver.Headers["List-Unsubscribe"]
	u := strings.Trim(strings.Split(unsub, ",")[0], "<> ")
	if !strings.Contains(unsub, "/u/") || leaver.Headers["List-Unsubscribe-Post"] != "List-Unsubscribe=One-Click" {
		t.Fatalf("List-Unsubscribe headers: %v", leaver.Headers)
	}
	resp, err := m.httpc.Post(u, "application/x-www-form-urlencoded", strings.NewReader(url.Values{"List-Unsubscribe": {"One-Click"}}.Encode()))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("one-click unsubscribe: %v %v", resp, err)
	}
	resp.Body.Close()
	second := campaign("Summer sale")
	waitFor(t, "every recipient of the second campaign settled", 2*time.Minute, func() bool {
		c := delivery(second)
		return fmt.Sprint(c["sent"]) == fmt.Sprint(n-1) && fmt.Sprint(c["skipped"]) == "2"
	})
	if got := m.outbox(t); got.ByRecipient[strings.ToLower(leaver.To)] != 1 || got.Total != 2*n-1 {
		t.Errorf("after the unsubscribe: %s got %d messages, %d in all; want 1 and %d", leaver.To, got.ByRecipient[leaver.To], got.Total, 2*n-1)
	}

	// A data-subject erasure removes the contact from delivery too.
	code, r, _ := m.rest(t, "POST", "/v1/dsr/requests", token, map[string]any{"kind": "KIND_ERASURE", "regulation": "REGULATION_GDPR",
		"subject": []map[string]string{email("c00002@example.com")}})
	dsrID, _ := must("erasure request", code, r)["id"].(string)
	waitFor(t, "the erasure done", 2*time.Minute, func() bool {
		_, r, _ := m.rest(t, "GET", "/v1/dsr/requests/"+dsrID, token, nil)
		return r["state"] == "STATE_COMPLETED"
	})
	left, page := 0, ""
	for {
		_, list, _ := m.rest(t, "GET", "/v1/contacts?pageSize=1000&pageToken="+url.QueryEscape(page), token, nil)
		for _, c := range asList(list["contacts"]) {
			left++
			if c["email"] == "c00002@example.com" {
				t.Errorf("erased contact still listed: %v", c)
			}
		}
		if page, _ = list["nextPageToken"].(string); page == "" {
			break
		}
	}
	if left != n {
		t.Errorf("%d contacts after the erasure, want %d", left, n)
	}
}

// outboxSummary is the SendGrid stand-in's GET /outbox.
type outboxSummary struct {
	Total       int            `json:"total"`
	ByRecipient map[string]int `json:"by_recipient"`
	Messages    []struct {
		To, Subject, HTML string
		Headers           map[string]string
	} `json:"messages"`
}

func (m *mesh) outboxFetch(t testing.TB, query string) outboxSummary {
	t.Helper()
	resp, err := http.Get(m.sendgrid + "/outbox?" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out outboxSummary
	data, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("outbox: %v: %.200s", err, data)
	}
	return out
}

// outbox is the email stand-in's totals (no messages).
func (m *mesh) outbox(t testing.TB) outboxSummary { return m.outboxFetch(t, "limit=0") }

// outboxMessages lists the email stand-in's messages (to one address when to is set).
func (m *mesh) outboxMessages(t testing.TB, to string) []struct {
	To, Subject, HTML string
	Headers           map[string]string
} {
	q := "limit=1000000"
	if to != "" {
		q += "&to=" + url.QueryEscape(to)
	}
	return m.outboxFetch(t, q).Messages
}

func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }
