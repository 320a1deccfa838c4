package delivery_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/standin"
	twstandin "github.com/campaignmesh/campaignmesh/internal/standin/twilio"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/twilio"
)

func phone(i int) string { return fmt.Sprintf("+1555%07d", i) }

// The SMS path through the Twilio stand-in, with 429s (20429), 500s before and after
// creating, and hangs after creating: one SMS per recipient, the maybe-processed ones found
// by their body marker.
func TestSenderTwilioFaultsNoLossNoDuplicate(t *testing.T) {
	t.Parallel()
	const n = 5_000
	ctx := context.Background()
	l, _ := openLedger(t)
	const account, token = "AC00000000000000000000000000000009", "tw-token"
	sa, err := twstandin.New(twstandin.Config{AccountSID: account, AuthToken: token})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sa)
	t.Cleanup(func() { sa.Close(); srv.Close() })
	c, err := twilio.New(twilio.Config{BaseURL: srv.URL, AccountSID: account, Password: token, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p, err := twilio.NewProvider(c, twilio.ProviderConfig{From: "+15550001111"})
	if err != nil {
		t.Fatal(err)
	}
	rs := make([]delivery.NewRecipient, n)
	for i := range rs {
		rs[i] = delivery.NewRecipient{ContactID: fmt.Sprintf("contact-%06d", i), Address: phone(i)}
	}
	if _, err := l.AddRecipients(ctx, tenant, campaign, twoVariants, rs); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		sa.Faults().Inject(standin.FaultRateLimit, 4)
		sa.Faults().Inject(standin.FaultServerError, 2)
		sa.Faults().Inject(standin.FaultServerErrorAfterSend, 2)
		sa.Faults().Inject(standin.FaultHang, 1)
	}
	metrics := &delivery.Counters{}
	s, err := delivery.NewSender(delivery.SenderConfig{
		Store: l, Provider: p, Campaigns: newSwitch(), Owner: "sms-sender",
		Compose: func(_ context.Context, r delivery.Recipient) (delivery.Message, error) {
			return delivery.Message{Text: "Spring sale " + r.Variant}, nil
		},
		Concurrency: 16, Lease: 2 * time.Second, Settle: 2 * time.Second, Recheck: 200 * time.Millisecond,
		CheckEvery: 200 * time.Millisecond, Poll: 50 * time.Millisecond,
		Backoff: delivery.ExponentialBackoff(20*time.Millisecond, 500*time.Millisecond), Metrics: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(t, runAsync(ctx, s), 3*time.Minute); err != nil {
		t.Fatalf("run: %v", err)
	}
	if sa.Total() != n {
		t.Errorf("outbox holds %d messages, want %d", sa.Total(), n)
	}
	for i := range n {
		if got := sa.Count(phone(i)); got != 1 {
			t.Fatalf("%s got %d messages", phone(i), got)
		}
	}
	split := map[string]int{}
	for _, m := range sa.Messages() {
		v, _, _ := strings.Cut(strings.TrimPrefix(m.Body, "Spring sale "), " #")
		split[v]++
	}
	checkSplit(t, split, n)
	if metrics.Retries.Load() < 20 || metrics.Found.Load() != 15 || metrics.NotFound.Load() != 10 {
		t.Errorf("retries %d found %d not found %d; want ≥20, 15, 10", metrics.Retries.Load(), metrics.Found.Load(), metrics.NotFound.Load())
	}
}
