package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/standin"
	sgstandin "github.com/campaignmesh/campaignmesh/internal/standin/sendgrid"
	twstandin "github.com/campaignmesh/campaignmesh/internal/standin/twilio"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
	"github.com/campaignmesh/campaignmesh/services/delivery/sendgrid"
	"github.com/campaignmesh/campaignmesh/services/delivery/twilio"
)

// activeList is campaigns' list of active campaigns as the dispatcher reads it, changed by
// the test (the campaigns service's own ListDeliveryCampaigns is tested in campaigns and
// through services/delivery/campaignsclient).
type activeList struct {
	mu     sync.Mutex
	active map[string]delivery.ActiveCampaign
	err    error
}

func (l *activeList) ListActive(context.Context) ([]delivery.ActiveCampaign, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return nil, l.err
	}
	out := make([]delivery.ActiveCampaign, 0, len(l.active))
	for _, c := range l.active {
		out = append(out, c)
	}
	return out, nil
}

// activate makes the campaign active with a new activation time.
func (l *activeList) activate(c delivery.ActiveCampaign) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active == nil {
		l.active = map[string]delivery.ActiveCampaign{}
	}
	c.StateTime = time.Now().UTC().Truncate(time.Microsecond)
	l.active[c.ID] = c
}

// stop takes the campaign out of the active list (paused, cancelled…).
func (l *activeList) stop(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.active, id)
}

func (l *activeList) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.err = err
}

// plans holds every campaign's send plan; a campaign without one has no content.
type plans struct {
	mu sync.Mutex
	m  map[string]delivery.SendPlan
}

func (p *plans) set(campaignID string, plan delivery.SendPlan) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]delivery.SendPlan{}
	}
	if plan.Channel == "" {
		plan.Channel = delivery.ChannelEmail // the campaigns of these tests are email unless they say
	}
	p.m[campaignID] = plan
}

func (p *plans) SendPlan(_ context.Context, _, campaignID string) (delivery.SendPlan, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	plan, ok := p.m[campaignID]
	return plan, ok, nil
}

// dispatchRig is delivery's database (every migration), the SendGrid stand-in over HTTP,
// and a dispatcher's other ports.
type dispatchRig struct {
	store     *postgres.Store
	audiences *delivery.Audiences
	ledger    *postgres.Ledger
	dispatch  *postgres.Dispatch
	outbox    *sgstandin.Server
	provider  *sendgrid.Provider
	campaigns *activeList
	plans     *plans
	metrics   *delivery.Counters
}

func newDispatchRig(tb testing.TB) *dispatchRig {
	tb.Helper()
	store, err := postgres.Open(context.Background(), pgtest.NewDatabase(tb)+"&pool_max_conns=20")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(store.Close)
	sa, err := sgstandin.New(sgstandin.Config{APIKey: sgKey})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(sa)
	tb.Cleanup(func() { sa.Close(); srv.Close() })
	c, err := sendgrid.New(sendgrid.Config{BaseURL: srv.URL, APIKey: sgKey, Timeout: time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	return &dispatchRig{
		store: store, audiences: delivery.NewAudiences(store, nil),
		ledger: postgres.NewLedger(store.Pool()), dispatch: postgres.NewDispatch(store.Pool()),
		outbox:    sa,
		provider:  sendgrid.NewProvider(c, sendgrid.ProviderConfig{From: sendgrid.Address{Email: "news@shop.example"}}),
		campaigns: &activeList{}, plans: &plans{}, metrics: &delivery.Counters{},
	}
}

// dispatcher returns a dispatcher with test-sized times (as rig.sender's).
func (r *dispatchRig) dispatcher(tb testing.TB, owner string, edit func(*delivery.DispatcherConfig)) *delivery.Dispatcher {
	tb.Helper()
	cfg := delivery.DispatcherConfig{
		Campaigns: r.campaigns, Plans: r.plans, Audiences: r.audiences, Ledger: r.ledger, Store: r.dispatch,
		Owner: owner, CheckEvery: 200 * time.Millisecond, DriveLease: 3 * time.Second,
		Senders: map[delivery.Channel]delivery.SenderConfig{delivery.ChannelEmail: {
			Provider: r.provider, Compose: compose, Concurrency: 16,
			Lease: 2 * time.Second, Settle: 2 * time.Second, Recheck: 200 * time.Millisecond, Poll: 50 * time.Millisecond,
			Backoff: delivery.ExponentialBackoff(20*time.Millisecond, 500*time.Millisecond), Metrics: r.metrics,
		}},
	}
	if edit != nil {
		edit(&cfg)
	}
	d, err := delivery.NewDispatcher(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// start runs d until the test ends or the returned stop is called (which waits for it).
func start(tb testing.TB, d *delivery.Dispatcher) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := wait(tb, done, 30*time.Second); !errors.Is(err, context.Canceled) {
				tb.Errorf("dispatcher returned %v", err)
			}
		})
	}
	tb.Cleanup(stop)
	return stop
}

// addContacts creates n contacts of the tenant who granted email consent (user%06d@…), and
// returns their ids.
func (r *dispatchRig) addContacts(tb testing.TB, tenantID string, n int) {
	tb.Helper()
	for from := 0; from < n; from += 1000 {
		us := make([]delivery.ContactUpsert, 0, 1000)
		for i := from; i < min(from+1000, n); i++ {
			us = append(us, delivery.ContactUpsert{Email: address(i), TimeZone: "Europe/Paris",
				Consent: delivery.Consents{Email: delivery.Consent{State: delivery.ConsentGranted, Source: "test"}}})
		}
		if _, err := r.store.UpsertContacts(context.Background(), tenantID, us, time.Now()); err != nil {
			tb.Fatal(err)
		}
	}
}

// addIneligible creates one contact per reason it may not be sent an email.
func (r *dispatchRig) addIneligible(tb testing.TB, tenantID string) {
	tb.Helper()
	granted := delivery.Consents{Email: delivery.Consent{State: delivery.ConsentGranted, Source: "test"}}
	us := []delivery.ContactUpsert{
		{Email: "unknown-consent@example.com"},
		{Email: "revoked@example.com", Consent: delivery.Consents{Email: delivery.Consent{State: delivery.ConsentRevoked, Source: "test"}}},
		{Phone: "+33612345678", Consent: granted},
	}
	if _, err := r.store.UpsertContacts(context.Background(), tenantID, us, time.Now()); err != nil {
		tb.Fatal(err)
	}
}

func (r *dispatchRig) counts(tb testing.TB, campaignID string) delivery.Counts {
	tb.Helper()
	c, err := r.ledger.Counts(context.Background(), tenant, campaignID)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// sentExactlyOnce checks every one of the n contacts got exactly one message and the
// ledger says sent for n rows, and returns the split by variant the outbox shows.
func (r *dispatchRig) sentExactlyOnce(tb testing.TB, campaignID string, n int) map[string]int {
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
	for _, m := range r.outbox.Messages() {
		split[strings.TrimPrefix(m.Subject, "Spring sale ")]++
	}
	if c := r.counts(tb, campaignID); c.ByState[delivery.StateSent] != n || c.Open() != 0 {
		tb.Errorf("ledger %v, want %d sent", c.ByState, n)
	}
	return split
}

func (r *dispatchRig) finished(campaignID string) func() bool {
	return func() bool {
		open, err := r.ledger.Unfinished(context.Background(), tenant, campaignID, false)
		c, err2 := r.ledger.Counts(context.Background(), tenant, campaignID)
		return err == nil && err2 == nil && !open && c.ByState[delivery.StateSent] > 0
	}
}

func emailCampaign(id string) delivery.ActiveCampaign {
	return delivery.ActiveCampaign{TenantID: tenant, ID: id, Channel: delivery.ChannelEmail,
		Variants: []delivery.Variant{{Name: "a", Weight: 70}, {Name: "b", Weight: 30}}}
}

// An active campaign to 10,000 consenting contacts in two variants 70/30 (and three contacts
// it may not send to): exactly 10,000 messages in the stand-in, one per recipient, split by
// the weights; the ineligible ones are skipped with their reason.
func TestDispatcherSendsActiveCampaignExactlyOnce(t *testing.T) {
	t.Parallel()
	const n = 10_000
	r := newDispatchRig(t)
	r.addContacts(t, tenant, n)
	r.addIneligible(t, tenant)
	r.plans.set("c-10k", delivery.SendPlan{})
	begin := time.Now()
	r.campaigns.activate(emailCampaign("c-10k"))
	start(t, r.dispatcher(t, "dispatcher-1", nil))
	meshtest.Eventually(t, 3*time.Minute, r.finished("c-10k"), "campaign sent")
	took := time.Since(begin)
	t.Logf("%d messages into the stand-in in %s: %.0f msgs/s (activation to last message, resolution included)",
		n, took.Round(time.Millisecond), float64(n)/took.Seconds())
	split := r.sentExactlyOnce(t, "c-10k", n)
	if d := math.Abs(float64(split["a"]) - 0.7*float64(n)); d > 0.02*float64(n) || split["a"]+split["b"] != n {
		t.Errorf("split %v, want 70/30 of %d", split, n)
	}
	c := r.counts(t, "c-10k")
	if c.ByState[delivery.StateSkipped] != 3 {
		t.Errorf("skipped %d, want the 3 ineligible contacts", c.ByState[delivery.StateSkipped])
	}
}

// A campaign paused mid-send makes no provider call a couple of seconds after it left the
// active list; active again (a new activation), it finishes, still one message each.
func TestDispatcherPauseAndResume(t *testing.T) {
	t.Parallel()
	const n = 3000
	r := newDispatchRig(t)
	r.addContacts(t, tenant, n)
	r.plans.set("c-pause", delivery.SendPlan{})
	r.campaigns.activate(emailCampaign("c-pause"))
	start(t, r.dispatcher(t, "dispatcher-1", func(c *delivery.DispatcherConfig) {
		sc := c.Senders[delivery.ChannelEmail]
		sc.RatePerSecond = 500 // slow enough for the pause to land mid-send
		c.Senders[delivery.ChannelEmail] = sc
	}))
	meshtest.Eventually(t, time.Minute, func() bool { return r.outbox.Total() >= 500 }, "first messages")
	r.campaigns.stop("c-pause")
	// Calls in flight finish; none starts once the sender saw the new state (its next state
	// check after the dispatcher's next list): within seconds, the outbox stops growing.
	var paused int
	meshtest.Eventually(t, 15*time.Second, func() bool {
		if r.counts(t, "c-pause").ByState[delivery.StateSending] != 0 {
			return false
		}
		paused = r.outbox.Total()
		return !meshtest.Within(time.Second, func() bool { return r.outbox.Total() != paused })
	}, "sending stopped within seconds of the pause")
	if meshtest.Within(2*time.Second, func() bool { return r.outbox.Total() != paused }) {
		t.Fatalf("provider calls went on after the pause: %d, then %d", paused, r.outbox.Total())
	}
	if paused >= n {
		t.Fatalf("the pause came after the last message (%d)", paused)
	}
	t.Logf("paused at %d of %d", paused, n)
	r.campaigns.activate(emailCampaign("c-pause"))
	meshtest.Eventually(t, 2*time.Minute, r.finished("c-pause"), "campaign resumed and sent")
	r.sentExactlyOnce(t, "c-pause", n)
}

// A provider answering 429s and 500s for a while: no recipient lost, none twice, the 429s
// retried (visible in the metrics), the 500s-after-send reconciled, never re-sent.
func TestDispatcherProviderFaults(t *testing.T) {
	t.Parallel()
	const n = 3000
	r := newDispatchRig(t)
	r.addContacts(t, tenant, n)
	r.plans.set("c-faults", delivery.SendPlan{})
	f := r.outbox.Faults()
	for range 5 {
		f.Inject(standin.FaultRateLimit, 10)
		f.Inject(standin.FaultServerError, 3)
		f.Inject(standin.FaultServerErrorAfterSend, 3)
	}
	r.campaigns.activate(emailCampaign("c-faults"))
	start(t, r.dispatcher(t, "dispatcher-1", nil))
	meshtest.Eventually(t, 2*time.Minute, r.finished("c-faults"), "campaign sent")
	if f.Pending() != 0 {
		t.Fatalf("%d faults never played", f.Pending())
	}
	r.sentExactlyOnce(t, "c-faults", n)
	m := r.metrics
	t.Logf("retries %d (backoff %s), unknown %d, found %d, not found %d",
		m.Retries.Load(), time.Duration(m.BackoffNanos.Load()), m.Unknown.Load(), m.Found.Load(), m.NotFound.Load())
	if m.Retries.Load() < 50 || m.BackoffNanos.Load() == 0 || m.Unknown.Load() != 30 || m.Found.Load() != 15 {
		t.Errorf("retries %d backoff %d unknown %d found %d: want ≥ 50 retries with backoff, 30 unknown, 15 found",
			m.Retries.Load(), m.BackoffNanos.Load(), m.Unknown.Load(), m.Found.Load())
	}
}

// A dispatcher killed mid-send (its context cut while calls hang at the provider) and a new
// one under another owner: still one message each; the rows the dead one left in flight are
// reconciled, not re-sent.
func TestDispatcherRestartMidSend(t *testing.T) {
	t.Parallel()
	const n = 5000
	r := newDispatchRig(t)
	r.addContacts(t, tenant, n)
	r.plans.set("c-crash", delivery.SendPlan{})
	r.campaigns.activate(emailCampaign("c-crash"))
	stop := start(t, r.dispatcher(t, "dispatcher-1", nil))
	meshtest.Eventually(t, time.Minute, func() bool { return r.outbox.Total() >= 1000 }, "first messages")
	r.outbox.Faults().Inject(standin.FaultHang, 6)
	meshtest.Eventually(t, 30*time.Second, func() bool { return r.outbox.Faults().Pending() == 0 }, "hung calls")
	stop()
	t.Logf("after the kill: outbox %d, ledger %v", r.outbox.Total(), r.counts(t, "c-crash").ByState)
	start(t, r.dispatcher(t, "dispatcher-2", nil))
	meshtest.Eventually(t, 2*time.Minute, r.finished("c-crash"), "campaign finished by the new dispatcher")
	r.sentExactlyOnce(t, "c-crash", n)
}

// Two replicas following the same campaigns: one message each.
func TestDispatcherTwoReplicas(t *testing.T) {
	t.Parallel()
	const n = 3000
	r := newDispatchRig(t)
	r.addContacts(t, tenant, n)
	r.plans.set("c-two", delivery.SendPlan{})
	r.campaigns.activate(emailCampaign("c-two"))
	start(t, r.dispatcher(t, "replica-1", nil))
	start(t, r.dispatcher(t, "replica-2", nil))
	meshtest.Eventually(t, 2*time.Minute, r.finished("c-two"), "campaign sent")
	r.sentExactlyOnce(t, "c-two", n)
}

// A campaign stopped for good with rows whose outcome is open (a 500: maybe sent) gets them
// settled by lookups though it is no longer active: not found after the settle time, they go
// back to pending (sent only if the campaign is resumed).
func TestDispatcherSettlesStoppedCampaign(t *testing.T) {
	t.Parallel()
	const n = 200
	r := newDispatchRig(t)
	r.addContacts(t, tenant, n)
	r.plans.set("c-stop", delivery.SendPlan{})
	r.outbox.Faults().Inject(standin.FaultServerError, 5)
	r.campaigns.activate(emailCampaign("c-stop"))
	start(t, r.dispatcher(t, "dispatcher-1", func(c *delivery.DispatcherConfig) {
		sc := c.Senders[delivery.ChannelEmail]
		sc.Settle = 4 * time.Second
		c.Senders[delivery.ChannelEmail] = sc
	}))
	meshtest.Eventually(t, time.Minute, func() bool {
		c := r.counts(t, "c-stop")
		return c.ByState[delivery.StateUnknown] == 5 && c.ByState[delivery.StateSent] == n-5
	}, "unknown rows")
	r.campaigns.stop("c-stop")
	meshtest.Eventually(t, time.Minute, func() bool {
		return r.counts(t, "c-stop").ByState[delivery.StatePending] == 5
	}, "unknown rows of the stopped campaign settled")
	if c := r.counts(t, "c-stop"); c.ByState[delivery.StateSent] != r.outbox.Total() || r.outbox.Total() != n-5 {
		t.Errorf("ledger %v, outbox %d", c.ByState, r.outbox.Total())
	}
}

// A contact reached the frequency cap on the channel through another campaign is skipped
// with the reason; a contact under it is sent.
func TestDispatcherFrequencyCap(t *testing.T) {
	t.Parallel()
	const n = 100
	r := newDispatchRig(t)
	r.addContacts(t, tenant, n)
	edit := func(c *delivery.DispatcherConfig) {
		c.FrequencyCap = delivery.FrequencyCap{Max: 1, Window: 24 * time.Hour}
	}
	r.plans.set("c-first", delivery.SendPlan{})
	r.campaigns.activate(emailCampaign("c-first"))
	start(t, r.dispatcher(t, "dispatcher-1", edit))
	meshtest.Eventually(t, time.Minute, r.finished("c-first"), "first campaign sent")
	// The second campaign targets every contact again: each got one message within the window.
	r.plans.set("c-second", delivery.SendPlan{})
	r.campaigns.activate(emailCampaign("c-second"))
	meshtest.Eventually(t, time.Minute, func() bool {
		return r.counts(t, "c-second").ByState[delivery.StateSkipped] == n
	}, "second campaign's recipients skipped by the cap")
	if r.outbox.Total() != n {
		t.Errorf("outbox %d, want only the first campaign's %d", r.outbox.Total(), n)
	}
	var reason string
	if err := r.store.Pool().QueryRow(context.Background(), `SELECT DISTINCT reason FROM ledger WHERE campaign_id = 'c-second'`).Scan(&reason); err != nil || reason != string(delivery.SkipFrequencyCap) {
		t.Errorf("reason %q %v", reason, err)
	}
}

// Quiet hours make a recipient's row wait until they end in the contact's zone; a campaign
// without content is not resolved.
func TestDispatcherPlan(t *testing.T) {
	t.Parallel()
	r := newDispatchRig(t)
	r.addContacts(t, tenant, 10)
	r.campaigns.activate(emailCampaign("c-noplan"))
	// Quiet all day but the minute before midnight: every row waits.
	quiet := delivery.QuietHours{Start: 0, End: 23*time.Hour + 59*time.Minute}
	r.plans.set("c-quiet", delivery.SendPlan{QuietHours: quiet})
	r.campaigns.activate(emailCampaign("c-quiet"))
	start(t, r.dispatcher(t, "dispatcher-1", nil))
	meshtest.Eventually(t, time.Minute, func() bool { return r.counts(t, "c-quiet").ByState[delivery.StatePending] == 10 }, "quiet campaign resolved")
	var early int
	if err := r.store.Pool().QueryRow(context.Background(),
		`SELECT count(*) FROM ledger WHERE campaign_id = 'c-quiet' AND not_before < now() + interval '1 minute'`).Scan(&early); err != nil || early != 0 {
		t.Errorf("%d rows due within quiet hours (%v)", early, err)
	}
	if c := r.counts(t, "c-noplan"); len(c.ByState) != 0 {
		t.Errorf("campaign without content resolved: %v", c.ByState)
	}
	if r.outbox.Total() != 0 {
		t.Errorf("outbox %d, want none", r.outbox.Total())
	}
}

// The senders' view of a campaign's state is the last list: in it → sendable; not in it →
// not; the list failing → an error (the sender waits).
func TestDispatcherStatus(t *testing.T) {
	t.Parallel()
	r := newDispatchRig(t)
	d := r.dispatcher(t, "dispatcher-1", nil)
	ctx := context.Background()
	if _, err := d.Status(ctx, tenant, "c-1"); err == nil {
		t.Error("status before any list: no error")
	}
	r.campaigns.activate(emailCampaign("c-1"))
	var wg sync.WaitGroup
	cctx, cancel := context.WithCancel(ctx)
	d.Check(cctx, &wg)
	if st, err := d.Status(ctx, tenant, "c-1"); err != nil || !st.Sendable {
		t.Errorf("active: %+v %v", st, err)
	}
	if st, err := d.Status(ctx, tenant, "c-2"); err != nil || st.Sendable {
		t.Errorf("not listed: %+v %v", st, err)
	}
	r.campaigns.fail(fmt.Errorf("campaigns unreachable"))
	d.Check(cctx, &wg)
	if _, err := d.Status(ctx, tenant, "c-1"); err == nil {
		t.Error("list failed: no error")
	}
	cancel()
	wg.Wait()
}

func TestParseFrequencyCap(t *testing.T) {
	for in, want := range map[string]delivery.FrequencyCap{"": {}, "3/24h": {Max: 3, Window: 24 * time.Hour}, "1/90m": {Max: 1, Window: 90 * time.Minute}} {
		if got, err := delivery.ParseFrequencyCap(in); err != nil || got != want {
			t.Errorf("%q: %+v %v", in, got, err)
		}
	}
	for _, in := range []string{"3", "0/1h", "x/1h", "3/", "3/-1h", "-1/1h"} {
		if _, err := delivery.ParseFrequencyCap(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// An SMS campaign and an email campaign of one tenant, active together: each channel's
// sender sends its campaign, SMS to the contacts' phone numbers (the ones with SMS consent
// only), email to their addresses.
func TestDispatcherTwoChannels(t *testing.T) {
	t.Parallel()
	const n = 300
	r := newDispatchRig(t)
	const account, token = "AC00000000000000000000000000000009", "tw-token"
	sa, err := twstandin.New(twstandin.Config{AccountSID: account, AuthToken: token})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sa)
	t.Cleanup(func() { sa.Close(); srv.Close() })
	c, err := twilio.New(twilio.Config{BaseURL: srv.URL, AccountSID: account, Password: token, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sms, err := twilio.NewProvider(c, twilio.ProviderConfig{From: "+15550001111"})
	if err != nil {
		t.Fatal(err)
	}
	granted := delivery.Consent{State: delivery.ConsentGranted, Source: "test"}
	us := make([]delivery.ContactUpsert, n)
	for i := range us {
		us[i] = delivery.ContactUpsert{Email: address(i), Phone: phone(i), Consent: delivery.Consents{Email: granted}}
		if i%2 == 0 {
			us[i].Consent.SMS = granted
		}
	}
	if _, err := r.store.UpsertContacts(context.Background(), tenant, us, time.Now()); err != nil {
		t.Fatal(err)
	}
	r.plans.set("c-email", delivery.SendPlan{})
	r.plans.set("c-sms", delivery.SendPlan{Channel: delivery.ChannelSMS})
	r.campaigns.activate(emailCampaign("c-email"))
	smsCampaign := emailCampaign("c-sms")
	smsCampaign.Channel = delivery.ChannelSMS
	r.campaigns.activate(smsCampaign)
	start(t, r.dispatcher(t, "dispatcher-1", func(cfg *delivery.DispatcherConfig) {
		sc := cfg.Senders[delivery.ChannelEmail]
		sc.Provider = sms
		sc.Compose = func(_ context.Context, r delivery.Recipient) (delivery.Message, error) {
			return delivery.Message{Text: "Spring sale " + r.Variant}, nil
		}
		cfg.Senders[delivery.ChannelSMS] = sc
	}))
	meshtest.Eventually(t, time.Minute, r.finished("c-email"), "email campaign sent")
	meshtest.Eventually(t, time.Minute, r.finished("c-sms"), "SMS campaign sent")
	r.sentExactlyOnce(t, "c-email", n)
	if sa.Total() != n/2 {
		t.Errorf("SMS outbox %d, want %d", sa.Total(), n/2)
	}
	for i := range n {
		if want := 1 - i%2; sa.Count(phone(i)) != want {
			t.Fatalf("%s got %d SMS, want %d", phone(i), sa.Count(phone(i)), want)
		}
	}
	if c := r.counts(t, "c-sms"); c.ByState[delivery.StateSkipped] != n/2 {
		t.Errorf("SMS ledger %v, want %d skipped (no SMS consent)", c.ByState, n/2)
	}
}
