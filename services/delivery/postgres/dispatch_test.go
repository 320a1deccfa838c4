package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
)

// One driver per campaign: a second owner is refused while the first holds it (renewals
// included), takes it once the first's time ran out or it released it; a release by an owner
// that does not hold it changes nothing.
func TestTakeCampaign(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	d, ctx := postgres.NewDispatch(s.Pool()), context.Background()
	ref := delivery.CampaignRef{TenantID: "t1", CampaignID: "c1", Channel: delivery.ChannelEmail}
	take := func(owner string, until time.Duration) bool {
		t.Helper()
		ok, err := d.TakeCampaign(ctx, ref, owner, time.Now().Add(until))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !take("a", time.Minute) || take("b", time.Minute) || !take("a", time.Minute) {
		t.Fatal("a takes and renews; b is refused")
	}
	if err := d.ReleaseCampaign(ctx, ref, "b"); err != nil || take("b", time.Minute) {
		t.Fatalf("b's release freed a's campaign (%v)", err)
	}
	if err := d.ReleaseCampaign(ctx, ref, "a"); err != nil || !take("b", -time.Second) {
		t.Fatalf("a released; b takes (%v)", err)
	}
	if !take("c", time.Minute) {
		t.Fatal("b's time ran out: c takes over")
	}
}

// The frequency cap counts a contact's messages of the tenant's other campaigns on the same
// channel: sent within the window or on their way, not older ones, not this campaign's.
func TestRecentMessagesAndUnsettled(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	d, l, ctx := postgres.NewDispatch(s.Pool()), postgres.NewLedger(s.Pool()), context.Background()
	vs := []delivery.Variant{{Name: "a", Weight: 1}}
	add := func(campaign string, ch delivery.Channel, contacts ...string) {
		t.Helper()
		rs := make([]delivery.NewRecipient, len(contacts))
		for i, c := range contacts {
			rs[i] = delivery.NewRecipient{ContactID: c, Address: c + "@example.com"}
		}
		if _, err := l.AddRecipients(ctx, "t1", campaign, vs, rs); err != nil {
			t.Fatal(err)
		}
		if err := d.MarkResolved(ctx, delivery.CampaignRef{TenantID: "t1", CampaignID: campaign, Channel: ch}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	add("old", delivery.ChannelEmail, "x", "y")
	add("recent", delivery.ChannelEmail, "x", "z")
	add("sms", delivery.ChannelSMS, "x")
	add("stale", delivery.ChannelEmail, "y")
	add("this", delivery.ChannelEmail, "x", "y", "z")
	exec := func(sql string) {
		t.Helper()
		if _, err := s.Pool().Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	exec(`UPDATE ledger SET state = 'sent', update_time = now() - interval '2 days' WHERE campaign_id = 'old'`)
	exec(`UPDATE ledger SET state = 'sent' WHERE campaign_id = 'recent' AND contact_id = 'x'`)
	// A stopped campaign's row left pending long ago may never be sent: it does not count.
	exec(`UPDATE ledger SET update_time = now() - interval '2 days' WHERE campaign_id = 'stale'`)
	exec(`UPDATE ledger SET state = 'unknown' WHERE campaign_id = 'recent' AND contact_id = 'z'`)
	got, err := d.RecentMessages(ctx, "t1", delivery.ChannelEmail, "this", []string{"x", "y", "z"}, time.Now().Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if got["x"] != 1 || got["y"] != 0 || got["z"] != 1 {
		t.Errorf("recent messages %v, want x:1 (recent sent; old too old, sms another channel), y:0 (stale pending), z:1 (on its way)", got)
	}
	un, err := d.Unsettled(ctx)
	if err != nil || len(un) != 1 || un[0] != (delivery.CampaignRef{TenantID: "t1", CampaignID: "recent", Channel: delivery.ChannelEmail}) {
		t.Errorf("unsettled %v %v, want the campaign with the unknown row", un, err)
	}
	if ok, err := d.Resolved(ctx, "t1", "this", time.Unix(0, 0)); err != nil || ok {
		t.Errorf("resolved for another activation: %v %v", ok, err)
	}
}
