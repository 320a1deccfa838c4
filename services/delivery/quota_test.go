package delivery_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/quota"
	sgstandin "github.com/campaignmesh/campaignmesh/internal/standin/sendgrid"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
)

// applyQuota puts a tenant's snapshot (as of asOf) into v as the bucket's watch would.
func applyQuota(t *testing.T, v *quota.View, tenant string, asOf time.Time, qs ...quota.Quota) {
	t.Helper()
	b, err := json.Marshal(quota.Snapshot{AsOf: asOf, Quotas: qs})
	if err != nil {
		t.Fatal(err)
	}
	v.Apply(quota.Key(tenant), b, false)
}

// A campaign with more recipients than the tenant's hard email quota sends exactly the quota:
// the rest stay pending, GetCampaignDelivery names the quota that holds them, and a plan change
// that raises the limit sends them, each exactly once.
func TestSenderHoldsAtAHardQuota(t *testing.T) {
	t.Parallel()
	const n, limit = 30, 10
	r := newRig(t, sgstandin.Config{}, 5*time.Second)
	r.addRecipients(t, n)
	view := quota.NewView(nil)
	exceeded := quota.NewExceededCounter()
	now := time.Now()
	resets := quota.PeriodEnd(quota.Day, now)
	email := quota.Quota{Meter: quota.MessagesEmail, Limit: limit, Hard: true, Period: quota.Day, ResetsAt: resets}
	applyQuota(t, view, tenant, now, email)
	s := r.sender(t, "sender-1", func(c *delivery.SenderConfig) {
		c.Quotas, c.QuotaMeter = delivery.Quotas{View: view, Exceeded: exceeded}, quota.MessagesEmail
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(ctx, s)
	counts := func() delivery.Counts {
		c, err := r.ledger.Counts(context.Background(), tenant, campaign)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The sender claims up to its concurrency (16) at once: the rows past the quota are given
	// back uncalled, each counted as held by the hard quota.
	meshtest.Eventually(t, 30*time.Second, func() bool {
		c := counts()
		return c.ByState[delivery.StateSent] == limit && c.ByState[delivery.StatePending] == n-limit &&
			testutil.ToFloat64(exceeded.WithLabelValues(quota.MessagesEmail, "hard")) >= 1
	}, "the quota's %d messages were not sent with the rest held", limit)
	if got := r.outbox.Total(); got != limit {
		t.Fatalf("the provider got %d messages, the quota is %d", got, limit)
	}

	// The sending report names the quota holding a campaign of the tenant on the channel (the
	// dispatcher records the campaign's channel when it drives it); other campaigns and the
	// report without quotas name none.
	const held = "0b8f2a51-6a3e-4c1e-9d7a-3f5e2c1b0a99"
	if _, err := r.ledger.AddRecipients(context.Background(), tenant, held, twoVariants, []delivery.NewRecipient{{ContactID: "contact-x", Address: "x@example.com"}}); err != nil {
		t.Fatal(err)
	}
	if ok, err := postgres.NewDispatch(r.pool).TakeCampaign(context.Background(),
		delivery.CampaignRef{TenantID: tenant, CampaignID: held, Channel: delivery.ChannelEmail}, "sender-2", time.Now().Add(time.Minute)); err != nil || !ok {
		t.Fatalf("take campaign: %v %v", ok, err)
	}
	sending := delivery.NewSending(r.ledger).WithQuotas(view)
	p, err := sending.CampaignDelivery(context.Background(), tenant, held)
	if err != nil {
		t.Fatal(err)
	}
	if h := p.QuotaHold; p.Channel != delivery.ChannelEmail || h == nil || h.Meter != quota.MessagesEmail || h.Limit != limit || h.Used != limit || !h.ResetsAt.Equal(resets) {
		t.Fatalf("channel %q, quota hold %+v", p.Channel, p.QuotaHold)
	}
	if p, err := delivery.NewSending(r.ledger).CampaignDelivery(context.Background(), tenant, held); err != nil || p.QuotaHold != nil {
		t.Fatalf("without quotas: %+v %v", p.QuotaHold, err)
	}
	if p, err := sending.CampaignDelivery(context.Background(), "tenant-2", held); err != nil || p.QuotaHold != nil {
		t.Fatalf("another tenant's view of the campaign: %+v %v", p.QuotaHold, err)
	}

	// billing's next snapshot after a plan change: the 10 sent are counted, the limit raised.
	email.Limit, email.Used = 100, limit
	applyQuota(t, view, tenant, time.Now(), email)
	if err := wait(t, done, time.Minute); err != nil {
		t.Fatalf("run: %v", err)
	}
	r.exactlyOnce(t, n)
	if p, err := sending.CampaignDelivery(context.Background(), tenant, held); err != nil || p.QuotaHold != nil {
		t.Fatalf("after the limit was raised: %+v %v", p.QuotaHold, err)
	}
}

// A soft quota does not hold anything: every message is sent, and those past it are counted.
func TestSenderCountsPastASoftQuota(t *testing.T) {
	t.Parallel()
	const n = 20
	r := newRig(t, sgstandin.Config{}, 5*time.Second)
	r.addRecipients(t, n)
	view := quota.NewView(nil)
	exceeded := quota.NewExceededCounter()
	now := time.Now()
	applyQuota(t, view, tenant, now, quota.Quota{Meter: quota.MessagesEmail, Limit: 5, Period: quota.Month, ResetsAt: quota.PeriodEnd(quota.Month, now)})
	s := r.sender(t, "sender-1", func(c *delivery.SenderConfig) {
		c.Quotas, c.QuotaMeter = delivery.Quotas{View: view, Exceeded: exceeded}, quota.MessagesEmail
	})
	if err := wait(t, runAsync(context.Background(), s), time.Minute); err != nil {
		t.Fatalf("run: %v", err)
	}
	r.exactlyOnce(t, n)
	if got := testutil.ToFloat64(exceeded.WithLabelValues(quota.MessagesEmail, "soft")); got != n-5 {
		t.Fatalf("messages past the soft quota counted %v, want %d", got, n-5)
	}
}

// A test send is refused while the tenant is over a hard quota of the content's channel, with
// the quota's answer; another channel's quota does not matter.
func TestSendTestMessageOverAHardQuota(t *testing.T) {
	t.Parallel()
	r := newMessagesRig(t)
	ctx := context.Background()
	id := r.identity(t, "t1", mailIdentity, true)
	if _, err := r.m.SetCampaignContent(ctx, "t1", emailContent(id.ID), 0); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(0, r.now.Load())
	resets := quota.PeriodEnd(quota.Day, now)
	applyQuota(t, r.quotas, "t1", now,
		quota.Quota{Meter: quota.MessagesSMS, Limit: 0, Hard: true, Period: quota.Day, ResetsAt: resets})
	in := delivery.TestSend{To: "qa@shop.example", PreviewInput: delivery.PreviewInput{CampaignID: contentCampaign, Variant: "A"}}
	if _, err := r.m.SendTestMessage(ctx, "t1", in); err != nil {
		t.Fatalf("an SMS quota refused an email test send: %v", err)
	}
	applyQuota(t, r.quotas, "t1", now,
		quota.Quota{Meter: quota.MessagesEmail, Limit: 50, Hard: true, Period: quota.Day, Used: 50, ResetsAt: resets})
	_, err := r.m.SendTestMessage(ctx, "t1", in)
	st, _ := apperr.ToStatus(err)
	if st.Code() != codes.ResourceExhausted || st.Message() != "quota messages_email exceeded: 50 per day, resets at 2026-11-30T00:00:00Z" {
		t.Fatalf("test send over the quota: %v", err)
	}
	if got := len(r.mail.Messages()); got != 1 {
		t.Fatalf("outbox holds %d messages, want the first test send only", got)
	}
}
