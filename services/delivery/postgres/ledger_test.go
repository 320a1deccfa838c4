package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/services/delivery"
)

var variants = []delivery.Variant{{Name: "a", Weight: 60}, {Name: "b", Weight: 40}}

func contacts(n int) []delivery.NewRecipient {
	rs := make([]delivery.NewRecipient, n)
	for i := range rs {
		rs[i] = delivery.NewRecipient{ContactID: fmt.Sprintf("c%05d", i), Address: fmt.Sprintf("u%05d@example.com", i)}
	}
	return rs
}

// Resolving recipients twice adds nothing and moves no one to another variant.
func TestAddRecipientsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, pool := openLedger(t)
	n, err := l.AddRecipients(ctx, "t1", "camp", variants, contacts(12000))
	if err != nil || n != 12000 {
		t.Fatalf("first add: %d %v", n, err)
	}
	before, _ := l.Counts(ctx, "t1", "camp")
	rs := contacts(12500)
	rs[12400].Skip = "no consent"
	n, err = l.AddRecipients(ctx, "t1", "camp", variants, rs)
	if err != nil || n != 500 {
		t.Fatalf("second add: %d new, %v; want 500", n, err)
	}
	after, _ := l.Counts(ctx, "t1", "camp")
	if after.ByState[delivery.StatePending] != 12499 || after.ByState[delivery.StateSkipped] != 1 {
		t.Fatalf("counts %v", after.ByState)
	}
	var changed int
	for _, v := range variants {
		if after.ByVariant[v.Name][delivery.StatePending]+after.ByVariant[v.Name][delivery.StateSkipped] < before.ByVariant[v.Name][delivery.StatePending] {
			changed++
		}
	}
	if changed > 0 {
		t.Fatalf("variants moved: before %v after %v", before.ByVariant, after.ByVariant)
	}
	// Same contact in another campaign or tenant is another row.
	if n, _ := l.AddRecipients(ctx, "t2", "camp", variants, contacts(3)); n != 3 {
		t.Fatalf("other tenant: %d new", n)
	}
	var distinct int
	if err := pool.QueryRow(ctx, `SELECT count(DISTINCT (tenant_id, campaign_id, contact_id)) FROM ledger`).Scan(&distinct); err != nil || distinct != 12503 {
		t.Fatalf("distinct rows %d %v", distinct, err)
	}
}

// Concurrent claimers get disjoint rows and never wait on each other's locks.
func TestClaimDisjoint(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, _ := openLedger(t)
	if _, err := l.AddRecipients(ctx, "t1", "camp", variants, contacts(2000)); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		seen = map[string]string{}
		wg   sync.WaitGroup
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("w%d", w)
			for {
				rows, err := l.ClaimPending(ctx, delivery.Claim{TenantID: "t1", CampaignID: "camp", Owner: owner, Limit: 37, Now: time.Now(), Lease: time.Minute})
				if err != nil {
					t.Error(err)
					return
				}
				if len(rows) == 0 {
					return
				}
				mu.Lock()
				for _, r := range rows {
					if prev, dup := seen[r.ID]; dup {
						t.Errorf("row %s claimed by %s and %s", r.ID, prev, owner)
					}
					seen[r.ID] = owner
					if r.State != delivery.StateSending || r.Attempt != 1 || r.LeaseOwner != owner {
						t.Errorf("claimed row %+v", r)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 2000 {
		t.Fatalf("claimed %d rows, want 2000", len(seen))
	}
}

// Only the lease owner, for the attempt it claimed, finishes a row; an expired lease turns
// the row unknown (never pending), and the stale owner's late answer is refused.
func TestRecordIsConditional(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, _ := openLedger(t)
	if _, err := l.AddRecipients(ctx, "t1", "camp", variants, contacts(3)); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rows, err := l.ClaimPending(ctx, delivery.Claim{TenantID: "t1", CampaignID: "camp", Owner: "a", Limit: 3, Now: now, Lease: time.Second})
	if err != nil || len(rows) != 3 {
		t.Fatalf("claim: %d %v", len(rows), err)
	}
	r0, r1, r2 := rows[0], rows[1], rows[2]
	if ok, err := l.Record(ctx, delivery.Outcome{ID: r0.ID, Owner: "b", Attempt: r0.Attempt, State: delivery.StateSent, Now: now}); ok || err != nil {
		t.Fatalf("another owner finished the row: %v %v", ok, err)
	}
	if ok, err := l.Record(ctx, delivery.Outcome{ID: r0.ID, Owner: "a", Attempt: r0.Attempt + 1, State: delivery.StateSent, Now: now}); ok || err != nil {
		t.Fatalf("another attempt finished the row: %v %v", ok, err)
	}
	if ok, err := l.Record(ctx, delivery.Outcome{ID: r0.ID, Owner: "a", Attempt: r0.Attempt, State: delivery.StateSent, ProviderID: "m1", Now: now}); !ok || err != nil {
		t.Fatalf("owner could not finish: %v %v", ok, err)
	}
	if ok, _ := l.Record(ctx, delivery.Outcome{ID: r0.ID, Owner: "a", Attempt: r0.Attempt, State: delivery.StatePending, Now: now}); ok {
		t.Fatal("a finished row was written twice")
	}
	// r1 given back uncalled: pending again with its attempt restored.
	if ok, _ := l.Record(ctx, delivery.Outcome{ID: r1.ID, Owner: "a", Attempt: r1.Attempt, State: delivery.StatePending, Release: true, Now: now}); !ok {
		t.Fatal("release refused")
	}
	got, _, _ := l.Get(ctx, "t1", r1.ID)
	if got.State != delivery.StatePending || got.Attempt != 0 || got.LeaseOwner != "" {
		t.Fatalf("released row %+v", got)
	}
	// r2's lease expires while "a" is mid-call.
	later := now.Add(2 * time.Second)
	if n, err := l.ExpireLeases(ctx, "t1", "camp", later); err != nil || n != 1 {
		t.Fatalf("expired %d %v", n, err)
	}
	got, _, _ = l.Get(ctx, "t1", r2.ID)
	if got.State != delivery.StateUnknown {
		t.Fatalf("expired row is %s, want unknown", got.State)
	}
	if ok, _ := l.Record(ctx, delivery.Outcome{ID: r2.ID, Owner: "a", Attempt: r2.Attempt, State: delivery.StatePending, Now: later}); ok {
		t.Fatal("a stale owner put an expired row back to pending")
	}
	un, err := l.ClaimUnknown(ctx, "t1", "camp", later, time.Minute, 10)
	if err != nil || len(un) != 1 || un[0].ID != r2.ID {
		t.Fatalf("unknown claim %v %v", un, err)
	}
	if again, _ := l.ClaimUnknown(ctx, "t1", "camp", later, time.Minute, 10); len(again) != 0 {
		t.Fatal("an unknown row was handed out twice within its recheck time")
	}
	if ok, _ := l.Resolve(ctx, delivery.Resolution{ID: r2.ID, Attempt: r2.Attempt + 1, State: delivery.StatePending, Now: later}); ok {
		t.Fatal("resolved at the wrong attempt")
	}
	if ok, _ := l.Resolve(ctx, delivery.Resolution{ID: r2.ID, Attempt: r2.Attempt, State: delivery.StateSent, ProviderID: "m2", Now: later}); !ok {
		t.Fatal("resolve refused")
	}
	if ok, _ := l.Resolve(ctx, delivery.Resolution{ID: r2.ID, Attempt: r2.Attempt, State: delivery.StatePending, Now: later}); ok {
		t.Fatal("a resolved row was resolved again")
	}
	c, _ := l.Counts(ctx, "t1", "camp")
	if c.ByState[delivery.StateSent] != 2 || c.ByState[delivery.StatePending] != 1 || c.Open() != 1 {
		t.Fatalf("counts %v", c.ByState)
	}
	if open, err := l.Unfinished(ctx, "t1", "camp", false); !open || err != nil {
		t.Fatalf("a pending row left: unfinished %v %v", open, err)
	}
	if open, err := l.Unfinished(ctx, "t1", "camp", true); open || err != nil {
		t.Fatalf("nothing sending or unknown: settling %v %v", open, err)
	}
	if open, _ := l.Unfinished(ctx, "t1", "other", false); open {
		t.Fatal("another campaign is unfinished")
	}
	// A pending row with a future not_before is not due.
	if rows, _ := l.ClaimPending(ctx, delivery.Claim{TenantID: "t1", CampaignID: "camp", Owner: "a", Limit: 3, Now: now.Add(-time.Hour), Lease: time.Second}); len(rows) != 0 {
		t.Fatalf("claimed %d rows before they were due", len(rows))
	}
}
