package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The Dispatcher follows campaigns' states and drives the Senders. It keeps no truth of its
// own in memory: which campaigns are active comes from campaigns (ActiveCampaigns) at every
// check, whether a campaign's recipients were resolved for its current activation comes from
// the DispatchStore, and what is left to send comes from the ledger. A restarted process (or
// another replica) therefore picks up exactly where the last one stopped; the ledger's leases
// keep two replicas running one campaign from sending a recipient twice, and a per-campaign
// lock (DispatchStore.LockCampaign) keeps them from even trying.

// ActiveCampaigns lists active email/SMS campaigns (campaigns owns their state).
type ActiveCampaigns interface {
	ListActive(ctx context.Context) ([]ActiveCampaign, error)
}

// ActiveCampaign is an active email or SMS campaign as campaigns reports it.
type ActiveCampaign struct {
	TenantID, ID string
	Channel      Channel
	// Variants are the campaign's A/B arms; none means one unnamed arm.
	Variants []Variant
	// StateTime is when the campaign entered the active state: it names the activation, so
	// recipients are resolved once per activation (again after a pause and resume, adding
	// the segment's new members; the ledger keeps everyone already in it as they are).
	StateTime time.Time
}

// SendPlans says what a campaign sends: ok=false while it has no content (not sent yet).
type SendPlans interface {
	SendPlan(ctx context.Context, tenantID, campaignID string) (p SendPlan, ok bool, err error)
}

// SendPlan is who a campaign sends to and when.
type SendPlan struct {
	// Channel is the channel the content was written for: a campaign is sent only on its own.
	Channel Channel
	// SegmentID is the segment evaluated at send time; "" is every contact of the tenant.
	SegmentID string
	// QuietHours is the daily window of the recipient's local time in which nothing is sent
	// (zero: none).
	QuietHours QuietHours
	// LocalSendTime, when set, sends at this offset from local midnight in the recipient's
	// zone (the next occurrence at or after the activation).
	LocalSendTime *time.Duration
}

// FrequencyCap bounds the messages a contact gets on one channel within a sliding window,
// across campaigns. The zero value is no cap.
type FrequencyCap struct {
	Max    int
	Window time.Duration
}

// IsZero reports whether c is no cap.
func (c FrequencyCap) IsZero() bool { return c.Max <= 0 || c.Window <= 0 }

// String is the cap in ParseFrequencyCap's form ("" for none).
func (c FrequencyCap) String() string {
	if c.IsZero() {
		return ""
	}
	return strconv.Itoa(c.Max) + "/" + c.Window.String()
}

// ParseFrequencyCap parses "N/window" (e.g. "3/24h": at most 3 messages per contact and
// channel within any 24 hours); "" is no cap.
func ParseFrequencyCap(s string) (FrequencyCap, error) {
	if s == "" {
		return FrequencyCap{}, nil
	}
	n, w, ok := strings.Cut(s, "/")
	max, err1 := strconv.Atoi(n)
	window, err2 := time.ParseDuration(w)
	if !ok || err1 != nil || err2 != nil || max < 1 || window <= 0 {
		return FrequencyCap{}, fmt.Errorf("frequency cap %q: want messages/window, e.g. 3/24h", s)
	}
	return FrequencyCap{Max: max, Window: window}, nil
}

// SkipFrequencyCap is the reason of a recipient left out because the contact reached the
// frequency cap on the campaign's channel.
const SkipFrequencyCap SkipReason = "frequency_cap"

// CampaignRef names a campaign delivery has a ledger for, with its channel.
type CampaignRef struct {
	TenantID, CampaignID string
	Channel              Channel
}

// DispatchStore is what the Dispatcher keeps in the database besides the ledger.
type DispatchStore interface {
	// Resolved reports whether the campaign's recipients were resolved for the activation.
	Resolved(ctx context.Context, tenantID, campaignID string, activation time.Time) (bool, error)
	// MarkResolved records that the campaign's recipients were resolved for the activation.
	MarkResolved(ctx context.Context, c CampaignRef, activation time.Time) error
	// RecentMessages counts, per contact of contactIDs, the messages of the tenant's other
	// campaigns on ch (every campaign but exceptCampaignID) sent since since, or on their way
	// (pending, sending or unknown) and last changed since then: what a frequency cap weighs.
	// Counting those on their way keeps two campaigns resolved together within the cap.
	RecentMessages(ctx context.Context, tenantID string, ch Channel, exceptCampaignID string, contactIDs []string, since time.Time) (map[string]int, error)
	// Unsettled lists the campaigns with a row sending or unknown: a stopped campaign among
	// them still needs its lookups.
	Unsettled(ctx context.Context) ([]CampaignRef, error)
	// TakeCampaign makes owner the campaign's driver until until, if it has none, or owner
	// is it already (a renewal), or the last driver's time ran out; false when another
	// driver holds it. It records the campaign's channel.
	TakeCampaign(ctx context.Context, c CampaignRef, owner string, until time.Time) (bool, error)
	// ReleaseCampaign gives the campaign up if owner drives it.
	ReleaseCampaign(ctx context.Context, c CampaignRef, owner string) error
}

// DispatcherConfig configures a Dispatcher.
type DispatcherConfig struct {
	Campaigns ActiveCampaigns
	Plans     SendPlans
	Audiences *Audiences
	Ledger    LedgerStore
	Store     DispatchStore
	// Owner names this dispatcher as a campaign's driver and its senders in leases: unique
	// per process (a restarted process must use another).
	Owner string
	// DriveLease is how long a campaign stays this dispatcher's without a renewal
	// (DefaultDriveLease when 0): after a crash, another replica takes it over after that.
	DriveLease time.Duration
	// Senders configures the sender of each channel; a channel without one is not sent
	// (logged once). Their Store and Campaigns are set by the Dispatcher (the ledger, and
	// the campaign states of its last ListActive).
	Senders map[Channel]SenderConfig
	// CheckEvery is how often campaigns are listed (DefaultCheckEvery when 0).
	CheckEvery time.Duration
	// FrequencyCap applies to every tenant (zero: none).
	FrequencyCap FrequencyCap
	Now          func() time.Time
	Logger       *slog.Logger

	// Quotas hold each channel's sends at the tenant's hard quota on the channel's meter
	// (SenderConfig.Quotas; none when its View is nil).
	Quotas Quotas
}

// Dispatcher resolves active campaigns' recipients into the ledger and runs their senders.
type Dispatcher struct {
	cfg     DispatcherConfig
	senders map[Channel]*Sender

	mu       sync.Mutex
	active   map[campaignKey]ActiveCampaign
	listErr  error
	listed   bool
	running  map[campaignKey]*job
	done     map[campaignKey]time.Time // activation whose Run finished: not run again
	warnedCh map[Channel]bool
}

type campaignKey struct{ tenantID, campaignID string }

type job struct {
	reconcile bool
	cancel    context.CancelFunc
}

// NewDispatcher builds the senders of cfg.Senders and returns the dispatcher.
func NewDispatcher(cfg DispatcherConfig) (*Dispatcher, error) {
	if cfg.Campaigns == nil || cfg.Plans == nil || cfg.Audiences == nil || cfg.Ledger == nil || cfg.Store == nil {
		return nil, errors.New("dispatcher: campaigns, plans, audiences, ledger and store are required")
	}
	if cfg.Owner == "" {
		return nil, errors.New("dispatcher: owner is required")
	}
	if cfg.CheckEvery <= 0 {
		cfg.CheckEvery = DefaultCheckEvery
	}
	if cfg.DriveLease <= 0 {
		cfg.DriveLease = DefaultDriveLease
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{
		cfg: cfg, senders: map[Channel]*Sender{},
		active: map[campaignKey]ActiveCampaign{}, running: map[campaignKey]*job{},
		done: map[campaignKey]time.Time{}, warnedCh: map[Channel]bool{},
	}
	for ch, sc := range cfg.Senders {
		if !ch.Valid() {
			return nil, fmt.Errorf("dispatcher: unknown channel %q", ch)
		}
		sc.Store, sc.Campaigns = cfg.Ledger, d
		if sc.Quotas.View == nil {
			sc.Quotas, sc.QuotaMeter = cfg.Quotas, ch.QuotaMeter()
		}
		if sc.Owner == "" {
			sc.Owner = cfg.Owner
		}
		if sc.CheckEvery <= 0 {
			sc.CheckEvery = cfg.CheckEvery
		}
		if sc.Logger == nil {
			sc.Logger = cfg.Logger
		}
		s, err := NewSender(sc)
		if err != nil {
			return nil, fmt.Errorf("dispatcher: %s sender: %w", ch, err)
		}
		d.senders[ch] = s
	}
	return d, nil
}

// Status implements CampaignState for the senders from the last ListActive: a campaign not
// in it is not sendable; while listing fails the state is unknown (an error), so senders wait
// rather than send a campaign that may have been paused.
func (d *Dispatcher) Status(_ context.Context, tenantID, campaignID string) (CampaignStatus, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.listErr != nil {
		return CampaignStatus{}, fmt.Errorf("campaign states unknown: %w", d.listErr)
	}
	if !d.listed {
		return CampaignStatus{}, errors.New("campaign states not listed yet")
	}
	if _, ok := d.active[campaignKey{tenantID, campaignID}]; ok {
		return CampaignStatus{Sendable: true, State: "active"}, nil
	}
	return CampaignStatus{State: "not active"}, nil
}

// Run checks the campaigns every CheckEvery until ctx ends, then waits for the campaigns'
// runs to stop (an abrupt stop: rows in flight are settled by whoever runs next) and returns
// ctx's error.
func (d *Dispatcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(d.cfg.CheckEvery)
	defer t.Stop()
	for {
		d.Check(ctx, &wg)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Check lists the active campaigns once and starts what they need: a run for every active
// campaign not running here, a reconciliation for every stopped campaign with rows still
// sending or unknown. The jobs it starts are added to wg.
func (d *Dispatcher) Check(ctx context.Context, wg *sync.WaitGroup) {
	list, err := d.cfg.Campaigns.ListActive(ctx)
	if ctx.Err() != nil {
		return
	}
	d.mu.Lock()
	d.listErr = err
	if err != nil {
		d.mu.Unlock()
		d.cfg.Logger.Warn("delivery dispatcher: list active campaigns", "error", err)
		return
	}
	d.listed = true
	d.active = make(map[campaignKey]ActiveCampaign, len(list))
	for _, c := range list {
		d.active[campaignKey{c.TenantID, c.ID}] = c
	}
	var start []ActiveCampaign
	for k, c := range d.active {
		if d.senders[c.Channel] == nil {
			if !d.warnedCh[c.Channel] {
				d.warnedCh[c.Channel] = true
				d.cfg.Logger.Warn("delivery dispatcher: no provider configured for the channel: its campaigns are not sent", "channel", string(c.Channel))
			}
			continue
		}
		if j := d.running[k]; j != nil {
			if j.reconcile {
				j.cancel() // active again: the run takes over the lookups
			}
			continue
		}
		if act, ok := d.done[k]; ok && act.Equal(c.StateTime) {
			continue
		}
		start = append(start, c)
	}
	for k := range d.done {
		if _, ok := d.active[k]; !ok {
			delete(d.done, k)
		}
	}
	d.mu.Unlock()

	for _, c := range start {
		d.startJob(ctx, wg, campaignKey{c.TenantID, c.ID}, false, func(ctx context.Context) error { return d.runCampaign(ctx, c) })
	}
	unsettled, err := d.cfg.Store.Unsettled(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.cfg.Logger.Warn("delivery dispatcher: list campaigns with unsettled rows", "error", err)
		}
		return
	}
	for _, ref := range unsettled {
		k := campaignKey{ref.TenantID, ref.CampaignID}
		d.mu.Lock()
		_, active := d.active[k]
		d.mu.Unlock()
		s := d.senders[ref.Channel]
		if active || s == nil {
			continue
		}
		d.startJob(ctx, wg, k, true, func(ctx context.Context) error {
			return d.locked(ctx, ref, func(ctx context.Context) error {
				return s.Reconcile(ctx, ref.TenantID, ref.CampaignID)
			})
		})
	}
}

// startJob runs f for the campaign unless a job of the campaign runs already.
func (d *Dispatcher) startJob(ctx context.Context, wg *sync.WaitGroup, k campaignKey, reconcile bool, f func(context.Context) error) {
	d.mu.Lock()
	if d.running[k] != nil {
		d.mu.Unlock()
		return
	}
	jctx, cancel := context.WithCancel(ctx)
	j := &job{reconcile: reconcile, cancel: cancel}
	d.running[k] = j
	d.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel()
		err := f(jctx)
		d.mu.Lock()
		delete(d.running, k)
		d.mu.Unlock()
		switch {
		case err == nil, errors.Is(err, ErrStopped), errors.Is(err, errLocked), jctx.Err() != nil:
		default:
			d.cfg.Logger.Warn("delivery dispatcher: campaign", "tenant_id", k.tenantID, "campaign_id", k.campaignID, "reconcile", reconcile, "error", err)
		}
	}()
}

// DefaultDriveLease is how long a campaign stays its dispatcher's without a renewal.
const DefaultDriveLease = 30 * time.Second

// errLocked says another replica drives the campaign.
var errLocked = errors.New("campaign is driven by another replica")

// locked runs f as the campaign's driver, renewing the claim every third of the lease, and
// gives it up afterwards. When another replica drives the campaign it returns errLocked (the
// next check tries again). Losing the claim ends f: the ledger's leases would keep two
// drivers from sending a row twice, but one driver per campaign is cheaper.
func (d *Dispatcher) locked(ctx context.Context, ref CampaignRef, f func(context.Context) error) error {
	ok, err := d.cfg.Store.TakeCampaign(ctx, ref, d.cfg.Owner, d.cfg.Now().Add(d.cfg.DriveLease))
	if err != nil {
		return fmt.Errorf("take campaign: %w", err)
	}
	if !ok {
		return errLocked
	}
	defer func() {
		// Also after ctx ended (a stop): the next process need not wait for the lease.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := d.cfg.Store.ReleaseCampaign(rctx, ref, d.cfg.Owner); err != nil {
			d.cfg.Logger.Warn("delivery dispatcher: release campaign", "campaign_id", ref.CampaignID, "error", err)
		}
	}()
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(d.cfg.DriveLease / 3)
		defer t.Stop()
		for {
			select {
			case <-fctx.Done():
				return
			case <-t.C:
			}
			ok, err := d.cfg.Store.TakeCampaign(fctx, ref, d.cfg.Owner, d.cfg.Now().Add(d.cfg.DriveLease))
			if fctx.Err() != nil {
				return
			}
			if err != nil {
				d.cfg.Logger.Warn("delivery dispatcher: renew campaign", "campaign_id", ref.CampaignID, "error", err)
				continue // still ours until the lease ends; the next renewal may work
			}
			if !ok {
				d.cfg.Logger.Warn("delivery dispatcher: campaign taken over by another replica", "campaign_id", ref.CampaignID)
				cancel()
				return
			}
		}
	}()
	err = f(fctx)
	cancel()
	<-renewed
	return err
}

// runCampaign resolves the campaign's recipients for its activation if that was not done yet,
// then sends its ledger until it is finished or the campaign stops.
func (d *Dispatcher) runCampaign(ctx context.Context, c ActiveCampaign) error {
	ref := CampaignRef{TenantID: c.TenantID, CampaignID: c.ID, Channel: c.Channel}
	err := d.locked(ctx, ref, func(ctx context.Context) error {
		plan, ok, err := d.cfg.Plans.SendPlan(ctx, c.TenantID, c.ID)
		if err != nil {
			return fmt.Errorf("read send plan: %w", err)
		}
		if !ok {
			return nil // no content yet: looked at again at the next check
		}
		if plan.Channel != c.Channel {
			// The campaign's channel was changed after its content was written: nothing is
			// sent until the content is rewritten for the new channel.
			d.cfg.Logger.Warn("delivery: campaign content is for another channel; not sending", "campaign_id", c.ID,
				"content_channel", string(plan.Channel), "campaign_channel", string(c.Channel))
			return nil
		}
		done, err := d.cfg.Store.Resolved(ctx, c.TenantID, c.ID, c.StateTime)
		if err != nil {
			return fmt.Errorf("check resolution: %w", err)
		}
		if !done {
			if err := d.resolve(ctx, c, plan); err != nil {
				return err
			}
		}
		if err := d.senders[c.Channel].Run(ctx, c.TenantID, c.ID); err != nil {
			return err
		}
		d.mu.Lock()
		d.done[campaignKey{c.TenantID, c.ID}] = c.StateTime
		d.mu.Unlock()
		return nil
	})
	if errors.Is(err, errLocked) {
		return nil
	}
	return err
}

// resolve adds the campaign's recipients to its ledger: the segment's members (or every
// contact) as they are now, each pending from its send time, or skipped with the reason it
// may not be sent (consent, suppression, no address, frequency cap). Adding is idempotent, so
// a resolution cut short is simply done again; it is marked done only once complete.
func (d *Dispatcher) resolve(ctx context.Context, c ActiveCampaign, plan SendPlan) error {
	variants := c.Variants
	if len(variants) == 0 {
		variants = []Variant{{Name: "", Weight: 1}}
	}
	start := d.cfg.Now()
	added, total := 0, 0
	page := func(cs []Contact) error {
		rs := make([]NewRecipient, 0, len(cs))
		var capped map[string]int
		if fc := d.cfg.FrequencyCap; !fc.IsZero() {
			ids := make([]string, len(cs))
			for i, ct := range cs {
				ids[i] = ct.ID
			}
			var err error
			if capped, err = d.cfg.Store.RecentMessages(ctx, c.TenantID, c.Channel, c.ID, ids, start.Add(-fc.Window)); err != nil {
				return fmt.Errorf("count recent messages: %w", err)
			}
		}
		for _, ct := range cs {
			r := NewRecipient{ContactID: ct.ID, Address: ct.Email}
			if c.Channel == ChannelSMS {
				r.Address = ct.Phone
			}
			ok, why, err := d.cfg.Audiences.EligibleNow(ctx, c.TenantID, ct, c.Channel)
			if err != nil {
				return fmt.Errorf("eligibility of contact %s: %w", ct.ID, err)
			}
			if !ok {
				r.Skip = string(why)
			} else if capped != nil && capped[ct.ID] >= d.cfg.FrequencyCap.Max {
				r.Skip = string(SkipFrequencyCap)
			} else {
				r.NotBefore = sendTime(start, ct.TimeZone, plan)
			}
			rs = append(rs, r)
		}
		n, err := d.cfg.Ledger.AddRecipients(ctx, c.TenantID, c.ID, variants, rs)
		added += n
		total += len(rs)
		if err != nil {
			return fmt.Errorf("add recipients: %w", err)
		}
		return nil
	}
	var err error
	if plan.SegmentID != "" {
		err = d.cfg.Audiences.EvaluateSegment(ctx, c.TenantID, plan.SegmentID, page)
	} else {
		err = d.cfg.Audiences.EvaluateFilter(ctx, c.TenantID, Filter{}, page)
	}
	if err != nil {
		return fmt.Errorf("resolve recipients: %w", err)
	}
	if err := d.cfg.Store.MarkResolved(ctx, CampaignRef{TenantID: c.TenantID, CampaignID: c.ID, Channel: c.Channel}, c.StateTime); err != nil {
		return fmt.Errorf("mark recipients resolved: %w", err)
	}
	d.cfg.Logger.Info("delivery dispatcher: recipients resolved", "tenant_id", c.TenantID, "campaign_id", c.ID,
		"contacts", total, "added", added, "took", d.cfg.Now().Sub(start).Round(time.Millisecond))
	return nil
}

// sendTime is a recipient's not-before; a zone the contact store let through but this
// process does not know falls back to UTC rather than blocking the recipient.
func sendTime(start time.Time, zone string, plan SendPlan) time.Time {
	if plan.QuietHours.IsZero() && plan.LocalSendTime == nil {
		return time.Time{}
	}
	t, err := SendTime(start, zone, plan.QuietHours, plan.LocalSendTime)
	if err != nil {
		t, err = SendTime(start, "", plan.QuietHours, plan.LocalSendTime)
	}
	if err != nil {
		return time.Time{}
	}
	return t
}
