package twilio_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/standin"
	twstandin "github.com/campaignmesh/campaignmesh/internal/standin/twilio"
	"github.com/campaignmesh/campaignmesh/services/delivery/twilio"
)

const (
	account   = "AC00000000000000000000000000000001"
	authToken = "token-do-not-log"
	apiKeySID = "SK00000000000000000000000000000001"
	apiSecret = "secret-do-not-log"
)

func startStandIn(t *testing.T, cfg twstandin.Config) (*twstandin.Server, string) {
	t.Helper()
	cfg.AccountSID, cfg.AuthToken = account, authToken
	cfg.APIKeys = map[string]string{apiKeySID: apiSecret}
	sa, err := twstandin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sa)
	t.Cleanup(func() { sa.Close(); srv.Close() })
	return sa, srv.URL
}

func newClient(t *testing.T, base string, timeout time.Duration) *twilio.Client {
	t.Helper()
	c, err := twilio.New(twilio.Config{BaseURL: base, AccountSID: account, Username: apiKeySID, Password: apiSecret, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sms(to string) twilio.SendParams {
	return twilio.SendParams{To: to, From: "+15550001111", Body: "Sale today [ref:L-1]"}
}

func TestSendLandsInOutboxOnce(t *testing.T) {
	t.Parallel()
	sa, base := startStandIn(t, twstandin.Config{})
	c := newClient(t, base, 5*time.Second)
	m, err := c.Send(context.Background(), sms("+15551234567"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.SID, "SM") || m.Status != twilio.StatusQueued || m.To != "+15551234567" || m.NumSegments != 1 || m.DateCreated.IsZero() {
		t.Fatalf("created %+v", m)
	}
	if n := sa.Count("+15551234567"); n != 1 {
		t.Fatalf("outbox has %d for the number, want 1", n)
	}
	if got := sa.Messages()[0]; got.SID != m.SID || got.Body != "Sale today [ref:L-1]" || got.From != "+15550001111" {
		t.Fatalf("outbox %+v", got)
	}
	// The account's own token works as Basic auth too.
	c2, err := twilio.New(twilio.Config{BaseURL: base, AccountSID: account, Password: authToken})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Send(context.Background(), twilio.SendParams{To: "+15551234568", MessagingServiceSID: "MG1", Body: "x"}); err != nil {
		t.Fatal(err)
	}
}

func TestFetchAndList(t *testing.T) {
	t.Parallel()
	sa, base := startStandIn(t, twstandin.Config{})
	c := newClient(t, base, 5*time.Second)
	ctx := context.Background()
	var sids []string
	for i := range 5 {
		p := sms("+15551230000")
		p.Body = fmt.Sprintf("msg %d", i)
		m, err := c.Send(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		sids = append(sids, m.SID)
	}
	if _, err := c.Send(ctx, sms("+15559990000")); err != nil {
		t.Fatal(err)
	}
	got, err := c.FetchMessage(ctx, sids[2])
	if err != nil {
		t.Fatal(err)
	}
	if got.SID != sids[2] || got.Body != "msg 2" || got.Status != twilio.StatusDelivered || got.DateSent.IsZero() {
		t.Fatalf("fetched %+v", got)
	}
	if _, err := c.FetchMessage(ctx, "SMffffffffffffffffffffffffffffffff"); !twilio.IsNotFound(err) || twilio.Retryable(err) {
		t.Fatalf("fetch of an unknown sid: %v, want not found", err)
	}
	today := sa.Messages()[0].CreatedAt
	list, err := c.ListMessages(ctx, twilio.ListParams{To: "+15551230000", DateSent: today, PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 5 {
		t.Fatalf("listed %d messages over pages of 2, want 5", len(list))
	}
	seen := map[string]bool{}
	for _, m := range list {
		seen[m.SID] = true
		if m.To != "+15551230000" {
			t.Fatalf("listed a message to %s", m.To)
		}
	}
	if len(seen) != 5 {
		t.Fatalf("pages repeated messages: %v", seen)
	}
	if list[0].SID != sids[4] {
		t.Fatal("list is not newest first")
	}
	none, err := c.ListMessages(ctx, twilio.ListParams{To: "+15551230000", DateSentBefore: today.AddDate(0, 0, -1)})
	if err != nil || len(none) != 0 {
		t.Fatalf("list before yesterday: %d messages, %v", len(none), err)
	}
	some, err := c.ListMessages(ctx, twilio.ListParams{To: "+15551230000", DateSentAfter: today, Limit: 3})
	if err != nil || len(some) != 3 {
		t.Fatalf("list from today with limit 3: %d messages, %v", len(some), err)
	}
}

func TestSendErrorClasses(t *testing.T) {
	t.Parallel()
	type want struct {
		outcome   twilio.Outcome
		permanent bool
		status    int
		code      int
		created   int
	}
	cases := []struct {
		name   string
		fault  standin.Fault
		params twilio.SendParams
		secret string
		want   want
	}{
		{"429 / 20429", standin.FaultRateLimit, sms("+15551234567"), "", want{twilio.NotProcessed, false, 429, 20429, 0}},
		{"500", standin.FaultServerError, sms("+15551234567"), "", want{twilio.MaybeProcessed, false, 500, 20500, 0}},
		{"500 after create", standin.FaultServerErrorAfterSend, sms("+15551234567"), "", want{twilio.MaybeProcessed, false, 500, 20500, 1}},
		{"timeout after create", standin.FaultHang, sms("+15551234567"), "", want{twilio.MaybeProcessed, false, 0, 0, 1}},
		{"400 invalid number", "", sms(twstandin.InvalidNumber), "", want{twilio.NotProcessed, true, 400, 21211, 0}},
		{"400 not e164", "", sms("5551234567"), "", want{twilio.NotProcessed, true, 400, 21211, 0}},
		{"401 bad secret", "", sms("+15551234567"), "wrong", want{twilio.NotProcessed, true, 401, 20003, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sa, base := startStandIn(t, twstandin.Config{})
			c := newClient(t, base, 300*time.Millisecond)
			if tc.secret != "" {
				var err error
				if c, err = twilio.New(twilio.Config{BaseURL: base, AccountSID: account, Username: apiKeySID, Password: twilio.Secret(tc.secret)}); err != nil {
					t.Fatal(err)
				}
			}
			if tc.fault != "" {
				sa.Faults().Inject(tc.fault, 1)
			}
			_, err := c.Send(context.Background(), tc.params)
			var e *twilio.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not a *twilio.Error", err)
			}
			if e.Outcome != tc.want.outcome || e.Permanent != tc.want.permanent || e.Status != tc.want.status || e.Code != tc.want.code {
				t.Fatalf("got %+v (%v), want %+v", e, err, tc.want)
			}
			if twilio.Retryable(err) != (tc.want.outcome == twilio.NotProcessed && !tc.want.permanent) || twilio.MaybeSent(err) != (tc.want.outcome == twilio.MaybeProcessed) {
				t.Fatalf("Retryable %v MaybeSent %v for %v", twilio.Retryable(err), twilio.MaybeSent(err), err)
			}
			if e.Status != 0 && e.MoreInfo == "" {
				t.Fatalf("no more_info in %+v", e)
			}
			if n := sa.Total(); n != tc.want.created {
				t.Fatalf("outbox holds %d, want %d", n, tc.want.created)
			}
			for _, secret := range []string{apiSecret, authToken, tc.secret} {
				if secret != "" && strings.Contains(err.Error(), secret) {
					t.Fatalf("error text shows a secret: %v", err)
				}
			}
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		_, err = newClient(t, "http://"+addr, time.Second).Send(context.Background(), sms("+15551234567"))
		if !twilio.Retryable(err) || twilio.MaybeSent(err) {
			t.Fatalf("refused connection: %v, want not processed and retryable", err)
		}
	})
	t.Run("invalid params are refused before sending", func(t *testing.T) {
		t.Parallel()
		sa, base := startStandIn(t, twstandin.Config{})
		for _, p := range []twilio.SendParams{
			{To: "+15551234567", Body: "no sender"},
			{To: "+15551234567", From: "+15550001111"},
			{From: "+15550001111", Body: "no recipient"},
			{To: "+15551234567", From: "+15550001111", Body: strings.Repeat("a", 1601)},
		} {
			_, err := newClient(t, base, time.Second).Send(context.Background(), p)
			var e *twilio.Error
			if !errors.As(err, &e) || e.Outcome != twilio.NotProcessed || !e.Permanent || e.Status != 0 {
				t.Fatalf("%+v: got %v, want a permanent not-processed error without a status", p, err)
			}
		}
		if sa.Total() != 0 {
			t.Fatal("invalid params reached the provider")
		}
	})
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	sa, base := startStandIn(t, twstandin.Config{RatePerSecond: 1, Now: func() time.Time { return time.Unix(1_800_000_000, 0) }})
	c := newClient(t, base, 5*time.Second)
	if _, err := c.Send(context.Background(), sms("+15551234567")); err != nil {
		t.Fatal(err)
	}
	_, err := c.Send(context.Background(), sms("+15551234568"))
	var e *twilio.Error
	if !errors.As(err, &e) || e.Code != twilio.CodeTooManyRequests || !twilio.Retryable(err) || e.RetryAfter <= 0 {
		t.Fatalf("over the limit: %v, want 20429 retryable with a retry-after", err)
	}
	if sa.Total() != 1 {
		t.Fatalf("outbox holds %d, want 1", sa.Total())
	}
}

func TestSecretsAreNeverShown(t *testing.T) {
	t.Parallel()
	cfg := twilio.Config{AccountSID: account, Username: apiKeySID, Password: apiSecret}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "cfg", cfg)
	c, err := twilio.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg), logs.String(), c.String(), fmt.Sprintf("%+v", *c)} {
		if strings.Contains(s, apiSecret) {
			t.Fatalf("secret shown in %q", s)
		}
	}
}

// BenchmarkSendToStandIn measures messages created at the stand-in per second over
// loopback HTTP with 16 × GOMAXPROCS concurrent senders.
func BenchmarkSendToStandIn(b *testing.B) {
	sa, err := twstandin.New(twstandin.Config{AccountSID: account, AuthToken: authToken})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(sa)
	defer func() { sa.Close(); srv.Close() }()
	c, err := twilio.New(twilio.Config{BaseURL: srv.URL, AccountSID: account, Password: authToken})
	if err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Send(context.Background(), sms("+15551234567")); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
}
