package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/services/delivery/sendgrid"
	"github.com/campaignmesh/campaignmesh/services/delivery/twilio"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const (
	testAPIKey = "SG.cmd-test-key"
	testToken  = "cmd-test-token"
)

// startRun runs the command and returns its two base URLs and a stop function that waits
// for it to return.
func startRun(t *testing.T, args []string, logs *syncBuffer) (sgURL, twURL string, stop func()) {
	t.Helper()
	env := map[string]string{"CM_STANDIN_SENDGRID_API_KEY": testAPIKey, "CM_STANDIN_TWILIO_AUTH_TOKEN": testToken}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"-sendgrid-addr", "127.0.0.1:0", "-twilio-addr", "127.0.0.1:0", "-stripe-addr", "127.0.0.1:0", "-log-level", "debug"}, args...),
			func(k string) string { return env[k] }, logs, func(a, b, _ net.Addr) { addrs <- [2]net.Addr{a, b} })
	}()
	var a [2]net.Addr
	select {
	case a = <-addrs:
	case err := <-done:
		cancel()
		t.Fatalf("run returned before listening: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return "http://" + a[0].String(), "http://" + a[1].String(), stop
}

func outboxTotal(t *testing.T, base string) int {
	t.Helper()
	resp, err := http.Get(base + "/outbox")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Total       int            `json:"total"`
		ByRecipient map[string]int `json:"by_recipient"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out.Total
}

func TestStandinServesBothProviders(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	keyFile := filepath.Join(t.TempDir(), "webhook-key.pem")
	sgURL, twURL, stop := startRun(t, []string{"-sendgrid-signing-key-file", keyFile}, logs)
	ctx := context.Background()

	sg, err := sendgrid.New(sendgrid.Config{BaseURL: sgURL, APIKey: testAPIKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sg.Send(ctx, sendgrid.Mail{From: sendgrid.Address{Email: "a@shop.example"}, To: sendgrid.Address{Email: "ann@example.com"}, Subject: "s", Text: "t"}); err != nil {
		t.Fatal(err)
	}
	tw, err := twilio.New(twilio.Config{BaseURL: twURL, AccountSID: DevTwilioAccountSID, Password: testToken})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Send(ctx, twilio.SendParams{To: "+15551234567", From: "+15550001111", Body: "hi"}); err != nil {
		t.Fatal(err)
	}
	if sgTotal, twTotal := outboxTotal(t, sgURL), outboxTotal(t, twURL); sgTotal != 1 || twTotal != 1 {
		t.Fatalf("outboxes hold %d and %d, want 1 and 1", sgTotal, twTotal)
	}

	// Faults over HTTP, then DELETE /outbox.
	resp, err := http.Post(sgURL+"/faults", "application/json", strings.NewReader(`{"fault":"429","count":1}`))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("inject: %v %v", resp, err)
	}
	resp.Body.Close()
	if _, err := sg.Send(ctx, sendgrid.Mail{From: sendgrid.Address{Email: "a@shop.example"}, To: sendgrid.Address{Email: "bob@example.com"}, Subject: "s", Text: "t"}); !sendgrid.Retryable(err) {
		t.Fatalf("after injecting a 429: %v", err)
	}
	req, _ := http.NewRequest(http.MethodDelete, twURL+"/outbox", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete outbox: %v %v", resp, err)
	}
	if n := outboxTotal(t, twURL); n != 0 {
		t.Fatalf("twilio outbox holds %d after DELETE", n)
	}

	// The verification key survives a restart with the same key file.
	first := publicKey(t, sgURL)
	stop()
	sgURL2, _, _ := startRun(t, []string{"-sendgrid-signing-key-file", keyFile}, logs)
	if second := publicKey(t, sgURL2); second != first || first == "" {
		t.Fatalf("verification key changed across restarts: %q then %q", first, second)
	}
	for _, secret := range []string{testAPIKey, testToken, "ann@example.com", "+15551234567"} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("logs show %q:\n%s", secret, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "standin listening") {
		t.Fatalf("no start line in logs:\n%s", logs.String())
	}
}

func publicKey(t *testing.T, base string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v3/user/webhooks/event/settings/signed", nil)
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		PublicKey string `json:"public_key"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if _, err := sendgrid.ParsePublicKey(out.PublicKey); err != nil {
		t.Fatalf("served key: %v", err)
	}
	return out.PublicKey
}

func TestBadSigningKeyFile(t *testing.T) {
	t.Parallel()
	if _, err := signingKey(filepath.Join(t.TempDir(), "missing-dir", "k.pem")); err == nil {
		t.Fatal("created a key in a missing directory")
	}
}

// -sendgrid-public-key-out writes the key webhooks verify with, as the settings route shows
// it, so a receiver can be configured from a file (make run configures delivery so).
func TestPublicKeyOut(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "sendgrid-webhook-public-key")
	sgURL, _, stop := startRun(t, []string{"-sendgrid-public-key-out", out}, &syncBuffer{})
	defer stop()
	written, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, sgURL+"/v3/user/webhooks/event/settings/signed", nil)
	req.Header.Set("Authorization", "Bearer "+string(testAPIKey))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var shown struct {
		PublicKey string `json:"public_key"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&shown); err != nil || shown.PublicKey == "" || strings.TrimSpace(string(written)) != shown.PublicKey {
		t.Fatalf("written %q, shown %q (%v)", written, shown.PublicKey, err)
	}
}

// A webhook CA file that is missing or holds no certificate stops the start.
func TestWebhookCAFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(dir, "missing.pem"), empty} {
		if _, err := webhookClient(f); err == nil {
			t.Errorf("%s accepted", f)
		}
	}
	if c, err := webhookClient(""); c != nil || err != nil {
		t.Errorf("no CA file: %v %v, want the default client", c, err)
	}
}
