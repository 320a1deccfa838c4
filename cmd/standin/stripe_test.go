package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/services/billing/stripe"
)

func TestStandinServesStripe(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyFile, secretFile := filepath.Join(dir, "stripe-api-key"), filepath.Join(dir, "stripe-webhook-secret")
	const key, secret = "sk_test_cmd_stripe_key", "whsec_cmd_stripe_secret"
	for f, v := range map[string]string{keyFile: key + "\n", secretFile: secret} {
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	hooks := make(chan string, 1)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hooks <- r.Header.Get("Stripe-Signature") + " " + string(body)
	}))
	defer receiver.Close()

	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-sendgrid-addr", "127.0.0.1:0", "-twilio-addr", "127.0.0.1:0", "-stripe-addr", "127.0.0.1:0",
			"-stripe-api-key-file", keyFile, "-stripe-webhook-secret-file", secretFile, "-stripe-webhook-url", receiver.URL},
			func(string) string { return "" }, logs, func(_, _, st net.Addr) { addr <- st })
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a.String()
	case err := <-done:
		cancel()
		t.Fatalf("run returned before listening: %v", err)
	}

	c, err := stripe.New(stripe.Config{BaseURL: base, APIKey: key, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e := stripe.MeterEvent{EventName: "cm_events_accepted", CustomerID: "cus_1", Value: 3, Identifier: "cm_x", Timestamp: time.Now()}
	if _, err := c.ReportMeterEvent(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(base + "/outbox")
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Total    int            `json:"total"`
		Received map[string]int `json:"received"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if out.Total != 1 || out.Received["cm_x"] != 1 {
		t.Fatalf("outbox %+v", out)
	}
	resp, err = http.Post(base+"/webhooks/send", "application/json", strings.NewReader(`{"type":"invoice.paid","customer":"cus_1"}`))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("webhook send: %v %v", resp, err)
	}
	resp.Body.Close()
	if got := <-hooks; !strings.HasPrefix(got, "t=") || !strings.Contains(got, ",v1=") || !strings.Contains(got, `"invoice.paid"`) {
		t.Fatalf("webhook %q", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{key, secret} {
		if strings.Contains(logs.String(), s) {
			t.Fatalf("logs show a secret: %s", logs.String())
		}
	}
}
