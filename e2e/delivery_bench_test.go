package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkDeliveryCampaign measures one email campaign on the real mesh (every service a
// process over mTLS) sending through the SendGrid stand-in: messages handed to the stand-in per
// second, from the first to the last, and the time from the activation's answer to the first
// message. CM_BENCH_RECIPIENTS sets the audience (default 100,000), CM_BENCH_CONCURRENCY
// delivery's provider calls in flight (default 64). Run it with make bench-delivery.
func BenchmarkDeliveryCampaign(b *testing.B) {
	n := envInt(b, "CM_BENCH_RECIPIENTS", 100_000)
	conc := envInt(b, "CM_BENCH_CONCURRENCY", 64)
	m := startMeshWith(b, meshConfig{providers: true, deliveryEnv: []string{"CM_DELIVERY_SEND_CONCURRENCY=" + strconv.Itoa(conc)}})
	_, login, _ := m.rest(b, "POST", "/v1/auth/login", "", m.bootstrapFile(b, "admin.json"))
	token, _ := login["accessToken"].(string)
	_, ident, _ := m.rest(b, "POST", "/v1/senderIdentities", token, map[string]any{"channel": "CHANNEL_EMAIL", "fromEmail": "news@acme.example"})
	identID, _ := ident["id"].(string)
	if code, v, _ := m.rest(b, "POST", "/v1/senderIdentities/"+identID+":verify", token, map[string]any{}); code != 200 {
		b.Fatalf("verify: %d %v", code, v)
	}
	var csv strings.Builder
	csv.WriteString("email,first_name,consent.email\n")
	for i := range n {
		fmt.Fprintf(&csv, "bench%06d@example.com,Ann%d,granted\n", i, i)
	}
	began := time.Now()
	// The import of a large file takes longer than the mesh client's 10 s timeout.
	req := must(http.NewRequest(http.MethodPost, m.url("/v1/contacts:import"), strings.NewReader(csv.String())))
	req.Header.Set("Content-Type", "text/csv")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Transport: m.httpc.Transport, Timeout: 10 * time.Minute}).Do(req)
	if err != nil {
		b.Fatal(err)
	}
	var imported map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&imported)
	resp.Body.Close()
	if resp.StatusCode != 200 || fmt.Sprint(imported["created"]) != strconv.Itoa(n) {
		b.Fatalf("import: %d %v", resp.StatusCode, imported)
	}
	b.Logf("imported %d contacts in %s (%.0f rows/s)", n, time.Since(began).Round(time.Millisecond), float64(n)/time.Since(began).Seconds())

	for i := range b.N {
		clear := must(http.NewRequest(http.MethodDelete, m.sendgrid+"/outbox", nil))
		if resp, err := http.DefaultClient.Do(clear); err != nil || resp.StatusCode != http.StatusNoContent {
			b.Fatalf("clear the outbox: %v %v", resp, err)
		}
		code, c, _ := m.rest(b, "POST", "/v1/campaigns", token, map[string]any{
			"name": fmt.Sprintf("Bench %d", i), "channel": "CHANNEL_EMAIL",
			"schedule": map[string]any{"start": time.Now().UTC().Add(time.Hour).Format("2006-01-02T15:04:05"), "timeZone": "UTC"},
			"budget":   map[string]any{"totalMicros": "1000000000", "currencyCode": "EUR", "pacing": "PACING_ASAP"},
			"variants": []map[string]any{{"name": "a", "weight": 50}, {"name": "b", "weight": 50}},
		})
		id, _ := c["id"].(string)
		if code != 200 {
			b.Fatalf("create: %d %v", code, c)
		}
		body := `<p>Hello {{first_name}}</p><p><a href="https://shop.example/sale">Sale</a></p>`
		if code, r, _ := m.rest(b, "PUT", "/v1/campaigns/"+id+"/content", token, map[string]any{"channel": "CHANNEL_EMAIL", "senderIdentityId": identID,
			"variants": []map[string]any{{"name": "a", "subject": "A {{first_name}}", "htmlBody": body}, {"name": "b", "subject": "B {{first_name}}", "htmlBody": body}}}); code != 200 {
			b.Fatalf("content: %d %v", code, r)
		}
		if code, r, _ := m.rest(b, "POST", "/v1/campaigns/"+id+":schedule", token, map[string]any{}); code != 200 {
			b.Fatalf("schedule: %d %v", code, r)
		}
		b.ResetTimer()
		if code, r, _ := m.rest(b, "POST", "/v1/campaigns/"+id+":activate", token, map[string]any{}); code != 200 {
			b.Fatalf("activate: %d %v", code, r)
		}
		activated := time.Now()
		var box benchOutbox
		waitFor(b, "every message in the outbox", 30*time.Minute, func() bool {
			return m.benchOutbox(b, false).Total >= n
		})
		b.StopTimer()
		box = m.benchOutbox(b, true)
		if box.Total != n || len(box.ByRecipient) != n {
			b.Fatalf("outbox: %d messages to %d recipients, want %d each once", box.Total, len(box.ByRecipient), n)
		}
		toFirst := box.First.Sub(activated)
		rate := float64(n-1) / box.Last.Sub(box.First).Seconds()
		b.ReportMetric(rate, "msgs/s")
		b.ReportMetric(toFirst.Seconds(), "s-to-first-message")
		b.Logf("%d messages in %s after the first (%.0f msgs/s); first message %s after the activation answered",
			n, box.Last.Sub(box.First).Round(time.Millisecond), rate, toFirst.Round(time.Millisecond))
	}
}

// benchOutbox is the stand-in's outbox totals and times.
type benchOutbox struct {
	Total       int            `json:"total"`
	ByRecipient map[string]int `json:"by_recipient"`
	First       time.Time      `json:"first_accepted_at"`
	Last        time.Time      `json:"last_accepted_at"`
}

// benchOutbox reads the outbox's totals; withRecipients also the count per recipient (else
// filtered to an address nobody has, to keep the polls small).
func (m *mesh) benchOutbox(tb testing.TB, withRecipients bool) benchOutbox {
	tb.Helper()
	q := "limit=0"
	if !withRecipients {
		q += "&to=nobody@bench.invalid"
	}
	resp, err := http.Get(m.sendgrid + "/outbox?" + q)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var out benchOutbox
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		tb.Fatal(err)
	}
	return out
}

func envInt(tb testing.TB, name string, def int) int {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
