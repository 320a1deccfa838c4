package sendgrid_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/standin"
	sgstandin "github.com/campaignmesh/campaignmesh/internal/standin/sendgrid"
	"github.com/campaignmesh/campaignmesh/services/delivery/sendgrid"
)

const testKey = "SG.test-key-do-not-log"

// start runs a stand-in over real HTTP and a client pointed at it.
func start(t *testing.T, cfg sgstandin.Config, timeout time.Duration) (*sgstandin.Server, *sendgrid.Client) {
	t.Helper()
	if cfg.APIKey == "" {
		cfg.APIKey = testKey
	}
	sa, err := sgstandin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sa)
	t.Cleanup(func() { sa.Close(); srv.Close() })
	c, err := sendgrid.New(sendgrid.Config{BaseURL: srv.URL, APIKey: testKey, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return sa, c
}

func mailTo(addr string) sendgrid.Mail {
	return sendgrid.Mail{
		From:               sendgrid.Address{Email: "news@shop.example", Name: "Shop"},
		To:                 sendgrid.Address{Email: addr},
		Subject:            "Spring sale",
		Text:               "Hello",
		HTML:               "<p>Hello</p>",
		CustomArgs:         map[string]string{"ledger_id": "L-1"},
		ListUnsubscribeURL: "https://t.example/u/token",
	}
}

func TestSendLandsInOutboxOnce(t *testing.T) {
	t.Parallel()
	sa, c := start(t, sgstandin.Config{}, 5*time.Second)
	sent, err := c.Send(context.Background(), mailTo("ann@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if sent.MessageID == "" {
		t.Fatal("no X-Message-Id")
	}
	if n := sa.Count("ann@example.com"); n != 1 {
		t.Fatalf("outbox has %d messages for ann, want 1", n)
	}
	got := sa.Messages()[0]
	if got.ID != sent.MessageID || got.Subject != "Spring sale" || got.Text != "Hello" || got.HTML != "<p>Hello</p>" || got.From != "news@shop.example" {
		t.Fatalf("outbox message %+v does not match the send %+v", got, sent)
	}
	if got.CustomArgs["ledger_id"] != "L-1" {
		t.Fatalf("custom args %v", got.CustomArgs)
	}
	if got.Headers["List-Unsubscribe"] != "<https://t.example/u/token>" || got.Headers["List-Unsubscribe-Post"] != "List-Unsubscribe=One-Click" {
		t.Fatalf("unsubscribe headers %v", got.Headers)
	}
}

func TestSendErrorClasses(t *testing.T) {
	t.Parallel()
	type want struct {
		outcome   sendgrid.Outcome
		permanent bool
		status    int
		retry     bool // RetryAfter > 0
		delivered int  // messages in the outbox afterwards
	}
	cases := []struct {
		name  string
		fault standin.Fault
		key   string
		to    string
		want  want
	}{
		{"429", standin.FaultRateLimit, "", "a@example.com", want{sendgrid.NotProcessed, false, 429, true, 0}},
		{"500", standin.FaultServerError, "", "a@example.com", want{sendgrid.MaybeProcessed, false, 500, false, 0}},
		{"500 after send", standin.FaultServerErrorAfterSend, "", "a@example.com", want{sendgrid.MaybeProcessed, false, 500, false, 1}},
		{"timeout after send", standin.FaultHang, "", "a@example.com", want{sendgrid.MaybeProcessed, false, 0, false, 1}},
		{"400 validation", "", "", "not an address", want{sendgrid.NotProcessed, true, 400, false, 0}},
		{"401 bad key", "", "SG.wrong", "a@example.com", want{sendgrid.NotProcessed, true, 401, false, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sa, c := start(t, sgstandin.Config{}, 300*time.Millisecond)
			if tc.key != "" {
				var err error
				if c, err = sendgrid.New(sendgrid.Config{BaseURL: urlOf(t, c), APIKey: sendgrid.Secret(tc.key)}); err != nil {
					t.Fatal(err)
				}
			}
			if tc.fault != "" {
				sa.Faults().Inject(tc.fault, 1)
			}
			_, err := c.Send(context.Background(), mailTo(tc.to))
			var e *sendgrid.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not a *sendgrid.Error", err)
			}
			if e.Outcome != tc.want.outcome || e.Permanent != tc.want.permanent || e.Status != tc.want.status || (e.RetryAfter > 0) != tc.want.retry {
				t.Fatalf("got %+v (%v), want %+v", e, err, tc.want)
			}
			if sendgrid.Retryable(err) != (tc.want.outcome == sendgrid.NotProcessed && !tc.want.permanent) {
				t.Fatalf("Retryable(%v) = %v", err, sendgrid.Retryable(err))
			}
			if sendgrid.MaybeSent(err) != (tc.want.outcome == sendgrid.MaybeProcessed) {
				t.Fatalf("MaybeSent(%v) = %v", err, sendgrid.MaybeSent(err))
			}
			if n := sa.Total(); n != tc.want.delivered {
				t.Fatalf("outbox holds %d, want %d", n, tc.want.delivered)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Fatalf("error text shows the key: %v", err)
			}
		})
	}
	t.Run("400 names the field", func(t *testing.T) {
		t.Parallel()
		_, c := start(t, sgstandin.Config{}, time.Second)
		_, err := c.Send(context.Background(), mailTo("not an address"))
		if !strings.Contains(err.Error(), "personalizations.0.to.0.email") {
			t.Fatalf("error %v does not name the field", err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		c, err := sendgrid.New(sendgrid.Config{BaseURL: "http://" + addr, APIKey: testKey})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Send(context.Background(), mailTo("a@example.com"))
		if !sendgrid.Retryable(err) || sendgrid.MaybeSent(err) {
			t.Fatalf("refused connection: %v, want not processed and retryable", err)
		}
		if strings.Contains(err.Error(), addr) {
			t.Fatalf("error text shows transport detail: %v", err)
		}
	})
	t.Run("invalid mail is refused before sending", func(t *testing.T) {
		t.Parallel()
		sa, c := start(t, sgstandin.Config{}, time.Second)
		m := mailTo("a@example.com")
		m.Subject = ""
		_, err := c.Send(context.Background(), m)
		var e *sendgrid.Error
		if !errors.As(err, &e) || e.Outcome != sendgrid.NotProcessed || !e.Permanent || e.Status != 0 {
			t.Fatalf("got %v, want a permanent not-processed error without a status", err)
		}
		if sa.Total() != 0 {
			t.Fatal("an invalid mail reached the provider")
		}
	})
}

func urlOf(t *testing.T, c *sendgrid.Client) string {
	t.Helper()
	return strings.TrimPrefix(c.String(), "sendgrid client for ")
}

func TestRateLimitAnswersWithResetHeaders(t *testing.T) {
	t.Parallel()
	clock := meshtest.NewClock(time.Unix(1_800_000_000, 0))
	sa, err := sgstandin.New(sgstandin.Config{APIKey: testKey, RatePerSecond: 2, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sa)
	t.Cleanup(func() { sa.Close(); srv.Close() })
	c, err := sendgrid.New(sendgrid.Config{BaseURL: srv.URL, APIKey: testKey, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := c.Send(context.Background(), mailTo(fmt.Sprintf("r%d@example.com", i))); err != nil {
			t.Fatalf("send %d within the limit: %v", i, err)
		}
	}
	_, err = c.Send(context.Background(), mailTo("r2@example.com"))
	var e *sendgrid.Error
	if !errors.As(err, &e) || e.Status != 429 || !sendgrid.Retryable(err) || e.RetryAfter <= 0 || e.RetryAfter > 2*time.Second {
		t.Fatalf("over the limit: %v (%+v), want 429 retryable with a retry-after up to 2s", err, e)
	}
	if sa.Total() != 2 {
		t.Fatalf("outbox holds %d, want 2", sa.Total())
	}
	clock.Advance(time.Second)
	if _, err := c.Send(context.Background(), mailTo("r2@example.com")); err != nil {
		t.Fatalf("after the reset: %v", err)
	}
}

func TestKeyIsNeverShown(t *testing.T) {
	t.Parallel()
	cfg := sendgrid.Config{BaseURL: "http://127.0.0.1:1", APIKey: testKey}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "cfg", cfg, "key", cfg.APIKey)
	c, err := sendgrid.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg.APIKey), logs.String(), c.String(), fmt.Sprintf("%+v", *c)} {
		if strings.Contains(s, testKey) {
			t.Fatalf("key shown in %q", s)
		}
	}
	if cfg.APIKey.Reveal() != testKey {
		t.Fatal("Reveal does not return the key")
	}
}

// capture is a webhook receiver that keeps each request's raw body and headers.
type capture struct {
	mu   sync.Mutex
	reqs []captured
}

type captured struct {
	body          []byte
	signature, ts string
}

func (c *capture) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	c.reqs = append(c.reqs, captured{body, r.Header.Get(sendgrid.SignatureHeader), r.Header.Get(sendgrid.TimestampHeader)})
	c.mu.Unlock()
}

func (c *capture) all() []captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]captured(nil), c.reqs...)
}

func TestWebhookFromStandIn(t *testing.T) {
	t.Parallel()
	hook := &capture{}
	hookSrv := httptest.NewServer(hook)
	t.Cleanup(hookSrv.Close)
	sa, c := start(t, sgstandin.Config{WebhookURL: hookSrv.URL}, 5*time.Second)
	key, err := sendgrid.ParsePublicKey(sa.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	v := sendgrid.NewVerifier(key, 0, nil)

	sentOK, err := c.Send(context.Background(), mailTo("ann@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	bounceMail := mailTo("bob@" + sgstandin.BounceDomain)
	bounceMail.CustomArgs = map[string]string{"ledger_id": "L-2"}
	sentBounce, err := c.Send(context.Background(), bounceMail)
	if err != nil {
		t.Fatal(err)
	}
	var events []sendgrid.Event
	meshtest.Eventually(t, 10*time.Second, func() bool {
		events = events[:0]
		for _, r := range hook.all() {
			req := httptest.NewRequest(http.MethodPost, "/webhooks/sendgrid", bytes.NewReader(r.body))
			req.Header.Set(sendgrid.SignatureHeader, r.signature)
			req.Header.Set(sendgrid.TimestampHeader, r.ts)
			evs, err := v.VerifyRequest(req)
			if err != nil {
				t.Fatalf("stand-in webhook does not verify: %v", err)
			}
			events = append(events, evs...)
		}
		return len(events) == 4
	}, "4 events (processed+delivered, processed+bounce)")
	kinds := map[string]sendgrid.Event{}
	for _, e := range events {
		kinds[e.CustomArgs["ledger_id"]+"/"+e.Event] = e
	}
	d, ok := kinds["L-1/delivered"]
	if !ok || d.SendGridMessageID() != sentOK.MessageID || d.Email != "ann@example.com" || d.Timestamp.IsZero() || d.EventID == "" {
		t.Fatalf("delivered event %+v for message %s", d, sentOK.MessageID)
	}
	b, ok := kinds["L-2/bounce"]
	if !ok || b.SendGridMessageID() != sentBounce.MessageID || b.BounceType != "bounce" || b.Reason == "" {
		t.Fatalf("bounce event %+v for message %s", b, sentBounce.MessageID)
	}
	if _, ok := kinds["L-1/processed"]; !ok {
		t.Fatalf("no processed event in %v", kinds)
	}
}

// TestConcurrentSendsRetryingOnlyNotProcessed sends to 200 recipients from 20 goroutines
// while the stand-in answers 429 to 50 requests, retrying only what the client calls
// retryable: every recipient ends with exactly one message.
func TestConcurrentSendsRetryingOnlyNotProcessed(t *testing.T) {
	t.Parallel()
	sa, c := start(t, sgstandin.Config{}, 5*time.Second)
	sa.Faults().Inject(standin.FaultRateLimit, 50)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for w := range 20 {
		wg.Go(func() {
			for i := w; i < 200; i += 20 {
				for {
					_, err := c.Send(context.Background(), mailTo(fmt.Sprintf("r%d@example.com", i)))
					if sendgrid.Retryable(err) {
						continue
					}
					if err != nil {
						errs <- err
					}
					break
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range 200 {
		if n := sa.Count(fmt.Sprintf("r%d@example.com", i)); n != 1 {
			t.Fatalf("recipient %d got %d messages", i, n)
		}
	}
	if sa.Faults().Pending() != 0 {
		t.Fatal("not every injected 429 was answered")
	}
}

// BenchmarkSendToStandIn measures sends handed to the stand-in per second over loopback
// HTTP with 32 concurrent senders (go test -bench SendToStandIn -run x).
func BenchmarkSendToStandIn(b *testing.B) {
	sa, err := sgstandin.New(sgstandin.Config{APIKey: testKey})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(sa)
	defer func() { sa.Close(); srv.Close() }()
	c, err := sendgrid.New(sendgrid.Config{BaseURL: srv.URL, APIKey: testKey})
	if err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(16) // 16 × GOMAXPROCS senders
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Send(context.Background(), mailTo("bench@example.com")); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
}
