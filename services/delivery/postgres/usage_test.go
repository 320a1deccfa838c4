package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
)

// Messages count once, on the day their sending attempt started and under their campaign's
// channel, whether the provider's answer came at once or a lookup settled it the next day, and
// whatever webhooks and erasures did to the row afterwards; rows not sent never count;
// contacts are counted now.
func TestUsageCounts(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	ctx := context.Background()
	l, d, u := postgres.NewLedger(s.Pool()), postgres.NewDispatch(s.Pool()), postgres.NewUsage(s.Pool())
	day := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	next := day.Add(24 * time.Hour)
	vs := []delivery.Variant{{Name: "a", Weight: 1}}
	campaign := func(tenant, id string, ch delivery.Channel, n int) {
		t.Helper()
		rs := make([]delivery.NewRecipient, n)
		for i := range rs {
			rs[i] = delivery.NewRecipient{ContactID: fmt.Sprint(id, i), Address: fmt.Sprint(id, i, "@example.com"), NotBefore: day}
		}
		if _, err := l.AddRecipients(ctx, tenant, id, vs, rs); err != nil {
			t.Fatal(err)
		}
		if err := d.MarkResolved(ctx, delivery.CampaignRef{TenantID: tenant, CampaignID: id, Channel: ch}, day); err != nil {
			t.Fatal(err)
		}
	}
	claim := func(tenant, id string, n int, at time.Time) []delivery.Recipient {
		t.Helper()
		rs, err := l.ClaimPending(ctx, delivery.Claim{TenantID: tenant, CampaignID: id, Owner: "w", Limit: n, Now: at, Lease: time.Minute})
		if err != nil || len(rs) != n {
			t.Fatalf("claim %d of %s: %d, %v", n, id, len(rs), err)
		}
		return rs
	}
	record := func(r delivery.Recipient, state delivery.RecipientState, at time.Time) {
		t.Helper()
		if ok, err := l.Record(ctx, delivery.Outcome{ID: r.ID, Owner: "w", Attempt: r.Attempt, State: state, ProviderID: "p-" + r.ID, Now: at}); !ok || err != nil {
			t.Fatalf("record %s: %v %v", r.ID, ok, err)
		}
	}
	campaign("t1", "mail", delivery.ChannelEmail, 5)
	campaign("t1", "text", delivery.ChannelSMS, 3)
	campaign("t2", "mail2", delivery.ChannelEmail, 1)

	// Day one, 23:59: mail sends 2 (their answers arrive after midnight), fails 1; text sends 1
	// and loses 1 to a crash (unknown), which a lookup finds sent the next day.
	late := day.Add(23*time.Hour + 59*time.Minute)
	rs := claim("t1", "mail", 3, late)
	record(rs[0], delivery.StateSent, next.Add(time.Second))
	record(rs[1], delivery.StateSent, next.Add(time.Second))
	record(rs[2], delivery.StateFailed, next.Add(time.Second))
	ts := claim("t1", "text", 2, late)
	record(ts[0], delivery.StateSent, late)
	if n, err := l.ExpireLeases(ctx, "t1", "text", next.Add(time.Hour)); n != 1 || err != nil {
		t.Fatalf("expire: %d %v", n, err)
	}
	if ok, err := l.Resolve(ctx, delivery.Resolution{ID: ts[1].ID, Attempt: ts[1].Attempt, State: delivery.StateSent, ProviderID: "found", Now: next.Add(2 * time.Hour)}); !ok || err != nil {
		t.Fatalf("resolve: %v %v", ok, err)
	}
	// Day two: mail sends 1 more; t2's one recipient is still sending (not counted).
	record(claim("t1", "mail", 1, next.Add(10*time.Hour))[0], delivery.StateSent, next.Add(10*time.Hour))
	claim("t2", "mail2", 1, next.Add(10*time.Hour))
	// Later webhooks and an erasure change the sent rows, not what they count as.
	if _, err := s.Pool().Exec(ctx, `UPDATE ledger SET delivery_status = 'delivered', delivery_status_time = $1, update_time = $1, address = ''
		WHERE state = 'sent'`, next.Add(5*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := s.Pool().Exec(ctx, `INSERT INTO contacts (tenant_id, email) VALUES ($1, $2)`, "t1", fmt.Sprint("c", i, "@example.com")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Pool().Exec(ctx, `INSERT INTO contacts (tenant_id, email) VALUES ('t3', 'only@example.com')`); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		from time.Time
		want []delivery.TenantUsage
	}{
		{day, []delivery.TenantUsage{{TenantID: "t1", MessagesEmail: 2, MessagesSMS: 2, ContactsStored: 3}, {TenantID: "t3", ContactsStored: 1}}},
		{next, []delivery.TenantUsage{{TenantID: "t1", MessagesEmail: 1, ContactsStored: 3}, {TenantID: "t3", ContactsStored: 1}}},
		{day.Add(-24 * time.Hour), []delivery.TenantUsage{{TenantID: "t1", ContactsStored: 3}, {TenantID: "t3", ContactsStored: 1}}},
	} {
		got, err := u.UsageCounts(ctx, c.from, c.from.Add(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.from.Format(time.DateOnly), diff)
		}
		// The independent count: sent rows by their recorded provider id, whatever their time.
		if c.from.Equal(day) {
			if n := count(t, s, `SELECT count(*) FROM ledger WHERE state = 'sent' AND tenant_id = 't1'`); n != 2+2+1 {
				t.Fatalf("%d sent rows, want 5", n)
			}
		}
	}
}
