package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/standin"
	sgstandin "github.com/campaignmesh/campaignmesh/internal/standin/sendgrid"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
	"github.com/campaignmesh/campaignmesh/services/delivery/sendgrid"
)

const (
	tenant   = "tenant-1"
	campaign = "campaign-1"
	sgKey    = "SG.sender-test"
)

var twoVariants = []delivery.Variant{{Name: "a", Weight: 60}, {Name: "b", Weight: 40}}

// campaignSwitch is campaigns' state as the sender reads it, flipped by the test.
type campaignSwitch struct{ state atomic.Value }

func newSwitch() *campaignSwitch {
	s := &campaignSwitch{}
	s.state.Store("active")
	return s
}

func (s *campaignSwitch) set(state string) { s.state.Store(state) }

func (s *campaignSwitch) Status(context.Context, string, string) (delivery.CampaignStatus, error) {
	st := s.state.Load().(string)
	return delivery.CampaignStatus{Sendable: st == "active", State: st}, nil
}

// rig is a ledger on real PostgreSQL and the SendGrid stand-in over real HTTP.
type rig struct {
	ledger    *postgres.Ledger
	pool      *pgxpool.Pool
	outbox    *sgstandin.Server
	provider  *sendgrid.Provider
	campaigns *campaignSwitch
	metrics   *delivery.Counters
}

func newRig(tb testing.TB, standinCfg sgstandin.Config, clientTimeout time.Duration) *rig {
	tb.Helper()
	l, pool := openLedger(tb)
	standinCfg.APIKey = sgKey
	sa, err := sgstandin.New(standinCfg)
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(sa)
	tb.Cleanup(func() { sa.Close(); srv.Close() })
	c, err := sendgrid.New(sendgrid.Config{BaseURL: srv.URL, APIKey: sgKey, Timeout: clientTimeout})
	if err != nil {
		tb.Fatal(err)
	}
	p := sendgrid.NewProvider(c, sendgrid.ProviderConfig{From: sendgrid.Address{Email: "news@shop.example"}})
	return &rig{ledger: l, pool: pool, outbox: sa, provider: p, campaigns: newSwitch(), metrics: &delivery.Counters{}}
}

func compose(_ context.Context, r delivery.Recipient) (delivery.Message, error) {
	return delivery.Message{Subject: "Spring sale " + r.Variant, Text: "Hello", HTML: "<p>Hello</p>"}, nil
}

// sender returns a sender with test-sized times: leases and settle times of seconds, a
// client timeout below the lease, fast backoff.
func (r *rig) sender(tb testing.TB, owner string, edit func(*delivery.SenderConfig)) *delivery.Sender {
	tb.Helper()
	cfg := delivery.SenderConfig{
		Store: r.ledger, Provider: r.provider, Campaigns: r.campaigns, Compose: compose, Owner: owner,
		Concurrency: 16, Lease: 2 * time.Second, Settle: 2 * time.Second, Recheck: 200 * time.Millisecond,
		CheckEvery: 200 * time.Millisecond, Poll: 50 * time.Millisecond,
		Backoff: delivery.ExponentialBackoff(20*time.Millisecond, 500*time.Millisecond),
		Metrics: r.metrics,
	}
	if edit != nil {
		edit(&cfg)
	}
	s, err := delivery.NewSender(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func (r *rig) addRecipients(tb testing.TB, n int) {
	tb.Helper()
	rs := make([]delivery.NewRecipient, n)
	for i := range rs {
		rs[i] = delivery.NewRecipient{ContactID: fmt.Sprintf("contact-%06d", i), Address: address(i)}
	}
	added, err := r.ledger.AddRecipients(context.Background(), tenant, campaign, twoVariants, rs)
	if err != nil || added != n {
		tb.Fatalf("add recipients: %d %v", added, err)
	}
}

func address(i int) string { return fmt.Sprintf("user%06d@example.com", i) }

// runAsync runs the sender in the background; the returned channel yields Run's error.
func runAsync(ctx context.Context, s *delivery.Sender) <-chan error {
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, tenant, campaign) }()
	return done
}

// wait returns what Run returned, failing the test after timeout.
func wait(tb testing.TB, done <-chan error, timeout time.Duration) error {
	tb.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		tb.Fatalf("sender still running after %s", timeout)
		return nil
	}
}

// exactlyOnce checks the outbox holds one message per recipient and the ledger says sent
// for each, and returns the split by variant as the outbox shows it.
func (r *rig) exactlyOnce(tb testing.TB, n int) map[string]int {
	tb.Helper()
	if total := r.outbox.Total(); total != n {
		tb.Errorf("outbox holds %d messages, want %d", total, n)
	}
	bad := 0
	for i := range n {
		if c := r.outbox.Count(address(i)); c != 1 {
			if bad < 10 {
				tb.Errorf("%s got %d messages, want 1", address(i), c)
			}
			bad++
		}
	}
	if bad > 0 {
		tb.Errorf("%d recipients did not get exactly one message", bad)
	}
	split := map[string]int{}
	refs := map[string]bool{}
	for _, m := range r.outbox.Messages() {
		split[strings.TrimPrefix(m.Subject, "Spring sale ")]++
		ref := m.CustomArgs[sendgrid.RefArg]
		if ref == "" || refs[ref] {
			tb.Errorf("message %s: ledger ref %q missing or repeated", m.ID, ref)
		}
		refs[ref] = true
		if strings.Contains(ref, "@") {
			tb.Errorf("personal data in the custom args: %v", m.CustomArgs)
		}
	}
	c, err := r.ledger.Counts(context.Background(), tenant, campaign)
	if err != nil {
		tb.Fatal(err)
	}
	if c.ByState[delivery.StateSent] != n || c.Open() != 0 {
		tb.Errorf("ledger %v, want %d sent", c.ByState, n)
	}
	return split
}

func checkSplit(tb testing.TB, split map[string]int, n int) {
	tb.Helper()
	// The split is the weights' within 2 % of the campaign (binomial σ ≈ 0.5 % at 10,000).
	if d := math.Abs(float64(split["a"]) - 0.6*float64(n)); d > 0.02*float64(n) || split["a"]+split["b"] != n {
		tb.Errorf("split %v, want 60/40 of %d", split, n)
	}
}

func TestSenderTenThousandInTwoVariants(t *testing.T) {
	t.Parallel()
	const n = 10_000
	r := newRig(t, sgstandin.Config{}, 5*time.Second)
	r.addRecipients(t, n)
	start := time.Now()
	if err := wait(t, runAsync(context.Background(), r.sender(t, "sender-1", nil)), 3*time.Minute); err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("%d messages in %s", n, time.Since(start).Round(time.Millisecond))
	checkSplit(t, r.exactlyOnce(t, n), n)
	if got := r.metrics.Sent.Load(); got != n {
		t.Errorf("metrics counted %d sent", got)
	}
}

// A provider answering 429s, 500s before and after accepting, and hanging after accepting:
// no recipient lost, none twice; the not-processed answers are retried with backoff (seen
// in the metrics), the maybe-processed ones reconciled by lookup, never re-sent blind.
func TestSenderFaultsNoLossNoDuplicate(t *testing.T) {
	t.Parallel()
	const n = 10_000
	r := newRig(t, sgstandin.Config{}, 500*time.Millisecond)
	r.addRecipients(t, n)
	f := r.outbox.Faults()
	// Interleaved so every kind lands while the campaign is in full flow.
	for range 10 {
		f.Inject(standin.FaultRateLimit, 5)
		f.Inject(standin.FaultServerError, 3)
		f.Inject(standin.FaultServerErrorAfterSend, 3)
		f.Inject(standin.FaultHang, 1)
	}
	if err := wait(t, runAsync(context.Background(), r.sender(t, "sender-1", nil)), 3*time.Minute); err != nil {
		t.Fatalf("run: %v", err)
	}
	if f.Pending() != 0 {
		t.Fatalf("%d faults never played", f.Pending())
	}
	checkSplit(t, r.exactlyOnce(t, n), n)
	m := r.metrics
	t.Logf("retries %d (backoff total %s), unknown %d, found %d, not found %d",
		m.Retries.Load(), time.Duration(m.BackoffNanos.Load()), m.Unknown.Load(), m.Found.Load(), m.NotFound.Load())
	// 50 429s retried; 30 500s (sent nothing) and 30 500-after-send + 10 hangs (sent) unknown.
	if m.Retries.Load() < 50 || m.BackoffNanos.Load() == 0 {
		t.Errorf("retries %d, backoff %d: want the 429s retried with backoff", m.Retries.Load(), m.BackoffNanos.Load())
	}
	if m.Unknown.Load() != 70 || m.Found.Load() != 40 || m.NotFound.Load() != 30 {
		t.Errorf("unknown %d found %d not found %d; want 70, 40, 30", m.Unknown.Load(), m.Found.Load(), m.NotFound.Load())
	}
}

// A sender that dies mid-send (its context cut while calls are in flight, some of them
// accepted by the provider and never answered) leaves rows sending; a new sender under
// another identity reconciles them after the lease and finishes: still one message each.
func TestSenderCrashThenResume(t *testing.T) {
	t.Parallel()
	const n = 10_000
	r := newRig(t, sgstandin.Config{}, 10*time.Second)
	r.addRecipients(t, n)
	ctx, crash := context.WithCancel(context.Background())
	done := runAsync(ctx, r.sender(t, "sender-1", nil))
	meshtest.Eventually(t, time.Minute, func() bool { return r.outbox.Total() >= 3000 }, "first messages")
	// The next calls are accepted and never answered: the crash comes mid-call.
	r.outbox.Faults().Inject(standin.FaultHang, 8)
	meshtest.Eventually(t, 30*time.Second, func() bool { return r.outbox.Faults().Pending() == 0 }, "hung calls")
	crash()
	if err := wait(t, done, 30*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("crashed run returned %v", err)
	}
	c, err := r.ledger.Counts(context.Background(), tenant, campaign)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after the crash: outbox %d, ledger %v", r.outbox.Total(), c.ByState)
	if c.ByState[delivery.StateSending] < 8 {
		t.Fatalf("%d rows left sending, want at least the 8 hung calls", c.ByState[delivery.StateSending])
	}
	if err := wait(t, runAsync(context.Background(), r.sender(t, "sender-2", nil)), 3*time.Minute); err != nil {
		t.Fatalf("resumed run: %v", err)
	}
	checkSplit(t, r.exactlyOnce(t, n), n)
	if r.metrics.Found.Load() < 8 {
		t.Errorf("found %d of the hung calls' messages by lookup, want at least 8", r.metrics.Found.Load())
	}
}

// Pausing stops the sender within seconds with nothing in flight; resuming finishes the
// rows still pending, each recipient once.
func TestSenderPauseAndResume(t *testing.T) {
	t.Parallel()
	const n = 5_000
	r := newRig(t, sgstandin.Config{}, 5*time.Second)
	r.addRecipients(t, n)
	s := r.sender(t, "sender-1", func(c *delivery.SenderConfig) { c.RatePerSecond = 1000 })
	done := runAsync(context.Background(), s)
	meshtest.Eventually(t, time.Minute, func() bool { return r.outbox.Total() >= 500 }, "first messages")
	r.campaigns.set("paused")
	paused := time.Now()
	err := wait(t, done, 10*time.Second)
	var stopped *delivery.StoppedError
	if !errors.As(err, &stopped) || stopped.State != "paused" || !errors.Is(err, delivery.ErrStopped) {
		t.Fatalf("paused run returned %v", err)
	}
	t.Logf("stopped %s after the pause", time.Since(paused).Round(time.Millisecond))
	atStop := r.outbox.Total()
	c, _ := r.ledger.Counts(context.Background(), tenant, campaign)
	if c.ByState[delivery.StateSending] != 0 || c.ByState[delivery.StateSent] != atStop || atStop >= n {
		t.Fatalf("after the pause: outbox %d, ledger %v", atStop, c.ByState)
	}
	// While paused a run claims nothing.
	if err := wait(t, runAsync(context.Background(), s), 10*time.Second); !errors.Is(err, delivery.ErrStopped) || r.outbox.Total() != atStop {
		t.Fatalf("run while paused: %v, outbox %d -> %d", err, atStop, r.outbox.Total())
	}
	r.campaigns.set("active")
	if err := wait(t, runAsync(context.Background(), s), 3*time.Minute); err != nil {
		t.Fatalf("resumed run: %v", err)
	}
	checkSplit(t, r.exactlyOnce(t, n), n)
}

// Two senders on one campaign (two replicas) share the rows: still one message each.
func TestTwoSendersShareACampaign(t *testing.T) {
	t.Parallel()
	const n = 4_000
	r := newRig(t, sgstandin.Config{}, 5*time.Second)
	r.addRecipients(t, n)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.sender(t, fmt.Sprintf("replica-%d", i), nil).Run(context.Background(), tenant, campaign); err != nil {
				t.Errorf("replica %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	checkSplit(t, r.exactlyOnce(t, n), n)
}

// The per-tenant rate keeps the sender under a provider's own limit: against a stand-in
// limited to 200/s, a sender limited to 150/s is never refused, while one without a limit
// is (the control, so the check has teeth).
func TestSenderRateLimitHonoursProvider(t *testing.T) {
	t.Parallel()
	// Without a limit of ours the sender outruns a provider allowing 40 a second even on a
	// loaded machine (32 calls in flight of a few milliseconds each), so the provider's 429s are
	// certain and must be retried; with our limit below the provider's, none come.
	for _, tc := range []struct {
		name          string
		n             int
		rate          float64
		providerLimit int
		want429       bool
	}{{"unlimited", 300, 0, 40, true}, {"150 per second", 600, 150, 200, false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := tc.n
			r := newRig(t, sgstandin.Config{RatePerSecond: tc.providerLimit}, 5*time.Second)
			r.addRecipients(t, n)
			s := r.sender(t, "sender-1", func(c *delivery.SenderConfig) { c.RatePerSecond = tc.rate })
			if err := wait(t, runAsync(context.Background(), s), 2*time.Minute); err != nil {
				t.Fatalf("run: %v", err)
			}
			r.exactlyOnce(t, n)
			if got := r.metrics.Retries.Load() > 0; got != tc.want429 {
				t.Fatalf("refused by the provider's rate limit: %v (%d times), want %v", got, r.metrics.Retries.Load(), tc.want429)
			}
		})
	}
}

// BenchmarkSenderCampaign100k measures messages handed to the SendGrid stand-in per second
// for one campaign of 100,000 recipients (ledger on real PostgreSQL, one outcome write per
// recipient), and the time from the start of the run to the first message.
func BenchmarkSenderCampaign100k(b *testing.B) {
	const n = 100_000
	for range b.N {
		b.StopTimer()
		r := newRig(b, sgstandin.Config{}, 10*time.Second)
		r.addRecipients(b, n)
		s := r.sender(b, "bench", func(c *delivery.SenderConfig) { c.Concurrency = 64; c.Metrics = nil })
		b.StartTimer()
		start := time.Now()
		if err := s.Run(context.Background(), tenant, campaign); err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		msgs := r.outbox.Messages()
		if len(msgs) != n {
			b.Fatalf("outbox holds %d messages, want %d", len(msgs), n)
		}
		b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
		b.ReportMetric(float64(msgs[0].AcceptedAt.Sub(start).Milliseconds()), "ms-to-first")
	}
}

// A claimed row whose call cannot start before its lease ends is given back, never sent
// late: a late call could land after another sender's lookup declared the row not sent.
// Here a rate of one send a second and a one-second lease make most claimed rows wait past
// their lease for a token.
func TestSenderCallNeverOutlivesLease(t *testing.T) {
	t.Parallel()
	const n = 6
	r := newRig(t, sgstandin.Config{}, 5*time.Second)
	r.addRecipients(t, n)
	s := r.sender(t, "sender-1", func(c *delivery.SenderConfig) {
		c.RatePerSecond, c.Lease, c.Settle, c.Recheck = 1, time.Second, time.Second, 100*time.Millisecond
	})
	if err := wait(t, runAsync(context.Background(), s), time.Minute); err != nil {
		t.Fatalf("run: %v", err)
	}
	r.exactlyOnce(t, n)
	if lost := r.metrics.LeasesLost.Load(); lost != 0 {
		t.Errorf("%d outcomes written after the lease ended", lost)
	}
}

// The database goes away under a sender mid-send (its outcome writes fail after the
// provider accepted): those rows stay sending, and another replica still connected
// reconciles them after their lease and finishes the campaign, one message each.
func TestSenderDatabaseLostMidSend(t *testing.T) {
	t.Parallel()
	const n = 5_000
	l, _, url := openLedgerURL(t)
	r := newRig(t, sgstandin.Config{}, 5*time.Second)
	r.ledger = l
	r.addRecipients(t, n)
	proxy, viaProxy := pgtest.NewProxy(t, url)
	a := r.sender(t, "replica-a", func(c *delivery.SenderConfig) { c.Store = postgres.NewLedger(openPool(t, viaProxy)) })
	ctx, stopA := context.WithCancel(context.Background())
	defer stopA()
	doneA := runAsync(ctx, a)
	meshtest.Eventually(t, time.Minute, func() bool { return r.outbox.Total() >= 1500 }, "first messages")
	proxy.Cut()
	if err := wait(t, runAsync(context.Background(), r.sender(t, "replica-b", nil)), 3*time.Minute); err != nil {
		t.Fatalf("replica b: %v", err)
	}
	stopA()
	if err := wait(t, doneA, 30*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("replica a returned %v", err)
	}
	r.exactlyOnce(t, n)
	t.Logf("found by lookup: %d, not found: %d", r.metrics.Found.Load(), r.metrics.NotFound.Load())
}

// A refused recipient (invalid address) fails with the provider's reason, without its
// address, and does not hold the campaign back; a compose error is retried.
func TestSenderPermanentFailuresAndComposeRetries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t, sgstandin.Config{}, 5*time.Second)
	rs := []delivery.NewRecipient{
		{ContactID: "good", Address: address(1)},
		{ContactID: "bad", Address: "not-an-address"},
		{ContactID: "flaky", Address: address(2)},
		{ContactID: "gone", Address: address(3), Skip: "no consent"},
	}
	if _, err := r.ledger.AddRecipients(ctx, tenant, campaign, twoVariants, rs); err != nil {
		t.Fatal(err)
	}
	var flaky atomic.Int32
	s := r.sender(t, "sender-1", func(c *delivery.SenderConfig) {
		c.Compose = func(ctx context.Context, rc delivery.Recipient) (delivery.Message, error) {
			if rc.ContactID == "flaky" && flaky.Add(1) <= 2 {
				return delivery.Message{}, errors.New("template store unavailable")
			}
			return compose(ctx, rc)
		}
	})
	if err := wait(t, runAsync(ctx, s), time.Minute); err != nil {
		t.Fatalf("run: %v", err)
	}
	c, _ := r.ledger.Counts(ctx, tenant, campaign)
	if c.ByState[delivery.StateSent] != 2 || c.ByState[delivery.StateFailed] != 1 || c.ByState[delivery.StateSkipped] != 1 {
		t.Fatalf("ledger %v", c.ByState)
	}
	if r.outbox.Total() != 2 || r.outbox.Count(address(1)) != 1 || r.outbox.Count(address(2)) != 1 {
		t.Fatalf("outbox %d", r.outbox.Total())
	}
	var failed delivery.Recipient
	for id := 1; id <= 4; id++ {
		if row, ok, _ := r.ledger.Get(ctx, tenant, fmt.Sprint(id)); ok && row.State == delivery.StateFailed {
			failed = row
		}
	}
	if failed.ContactID != "bad" || !strings.Contains(failed.Reason, "not processed, permanent") || strings.Contains(failed.Reason, "not-an-address") {
		t.Fatalf("failed row %+v", failed)
	}
	if r.metrics.Retries.Load() != 2 {
		t.Fatalf("retries %d, want the 2 compose errors", r.metrics.Retries.Load())
	}
}

// A recipient whose contact unsubscribed, was suppressed or erased after the recipients were
// resolved: Compose says skip, and the row is skipped with the reason, never sent or retried.
func TestSenderSkipsWhatComposeRefuses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t, sgstandin.Config{}, 5*time.Second)
	rs := []delivery.NewRecipient{{ContactID: "stays", Address: address(1)}, {ContactID: "left", Address: address(2)}}
	if _, err := r.ledger.AddRecipients(ctx, tenant, campaign, twoVariants, rs); err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int32
	s := r.sender(t, "sender-1", func(c *delivery.SenderConfig) {
		c.Compose = func(ctx context.Context, rc delivery.Recipient) (delivery.Message, error) {
			if rc.ContactID == "left" {
				refused.Add(1)
				return delivery.Message{}, fmt.Errorf("compose: %w", &delivery.SkipError{Reason: delivery.SkipNoConsent})
			}
			return compose(ctx, rc)
		}
	})
	if err := wait(t, runAsync(ctx, s), time.Minute); err != nil {
		t.Fatalf("run: %v", err)
	}
	c, _ := r.ledger.Counts(ctx, tenant, campaign)
	if c.ByState[delivery.StateSent] != 1 || c.ByState[delivery.StateSkipped] != 1 || r.outbox.Total() != 1 || r.outbox.Count(address(2)) != 0 {
		t.Fatalf("ledger %v, outbox %d", c.ByState, r.outbox.Total())
	}
	if refused.Load() != 1 || r.metrics.Retries.Load() != 0 {
		t.Fatalf("compose refused %d times, %d retries: a skip is final", refused.Load(), r.metrics.Retries.Load())
	}
	for id := 1; id <= 2; id++ {
		if row, ok, _ := r.ledger.Get(ctx, tenant, fmt.Sprint(id)); ok && row.ContactID == "left" && (row.State != delivery.StateSkipped || row.Reason != string(delivery.SkipNoConsent)) {
			t.Fatalf("row %+v", row)
		}
	}
}

// A campaign cancelled while some sends had unclear answers: Reconcile settles those rows by
// lookup alone (sent if the provider has them, pending if not) and sends nothing.
func TestReconcileStoppedCampaign(t *testing.T) {
	t.Parallel()
	const n = 2_000
	ctx := context.Background()
	r := newRig(t, sgstandin.Config{}, 500*time.Millisecond)
	r.addRecipients(t, n)
	f := r.outbox.Faults()
	f.Inject(standin.FaultServerError, 3)
	f.Inject(standin.FaultServerErrorAfterSend, 5)
	f.Inject(standin.FaultHang, 2)
	s := r.sender(t, "sender-1", func(c *delivery.SenderConfig) { c.RatePerSecond = 200 })
	done := runAsync(ctx, s)
	meshtest.Eventually(t, time.Minute, func() bool { return f.Pending() == 0 }, "faults played")
	r.campaigns.set("cancelled")
	if err := wait(t, done, 30*time.Second); !errors.Is(err, delivery.ErrStopped) {
		t.Fatalf("run: %v", err)
	}
	before := r.outbox.Total()
	c, _ := r.ledger.Counts(ctx, tenant, campaign)
	if c.ByState[delivery.StateUnknown] == 0 || c.ByState[delivery.StatePending] == 0 {
		t.Fatalf("after the cancel: %v, want unknown and pending rows", c.ByState)
	}
	rc, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := s.Reconcile(rc, tenant, campaign); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	c, _ = r.ledger.Counts(ctx, tenant, campaign)
	if r.outbox.Total() != before || c.ByState[delivery.StateUnknown]+c.ByState[delivery.StateSending] != 0 || c.ByState[delivery.StateSent] != before {
		t.Fatalf("after reconcile: outbox %d -> %d, ledger %v", before, r.outbox.Total(), c.ByState)
	}
	if r.metrics.Found.Load() != 7 || r.metrics.NotFound.Load() != 3 {
		t.Fatalf("found %d not found %d, want 7 and 3", r.metrics.Found.Load(), r.metrics.NotFound.Load())
	}
}
