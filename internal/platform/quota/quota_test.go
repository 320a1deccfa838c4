package quota_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/quota"
)

var (
	asOf   = time.Date(2026, 11, 29, 18, 0, 0, 500_000_000, time.UTC)
	resets = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
)

func snapshot(qs ...quota.Quota) []byte {
	b, err := json.Marshal(quota.Snapshot{AsOf: asOf, Quotas: qs})
	if err != nil {
		panic(err)
	}
	return b
}

func events(limit, used int64, hard bool) quota.Quota {
	return quota.Quota{Meter: "events_accepted", Limit: limit, Hard: hard, Period: quota.Day, Used: used, ResetsAt: resets}
}

// The bucket's value is exactly the plan's JSON, and reads back the same.
func TestSnapshotJSON(t *testing.T) {
	got := string(snapshot(events(1000, 123, true)))
	want := `{"as_of":"2026-11-29T18:00:00.5Z","quotas":[{"meter":"events_accepted","limit":1000,"hard":true,"period":"day","used":123,"resets_at":"2026-11-30T00:00:00Z"}]}`
	if got != want {
		t.Fatalf("JSON\n got %s\nwant %s", got, want)
	}
	var back quota.Snapshot
	if err := json.Unmarshal([]byte(want), &back); err != nil {
		t.Fatal(err)
	}
	if !back.AsOf.Equal(asOf) || len(back.Quotas) != 1 || back.Quotas[0] != events(1000, 123, true) {
		t.Fatalf("read back %+v", back)
	}
	if err := json.Unmarshal([]byte(`{"as_of":"2026-11-29T18:00:00Z","quotas":[{"meter":"m","period":"week","resets_at":"2026-11-30T00:00:00Z"}]}`), &back); err == nil {
		t.Fatal("an unknown period was read")
	}
}

// Units up to a hard limit pass, the next one is refused with the documented answer, and
// nothing of a refused request is counted.
func TestHardQuotaRefusesPastTheLimit(t *testing.T) {
	v := quota.NewView(nil)
	v.Apply(quota.Key("t1"), snapshot(events(10, 7, true)), false)
	now := asOf.Add(time.Minute)
	if d, r := v.Reserve("t1", "events_accepted", 3, now); !d.Allow || d.Hard != nil || r == nil {
		t.Fatalf("3 of the 3 left: %+v", d)
	}
	d, r := v.Reserve("t1", "events_accepted", 1, now)
	if d.Allow || d.Hard == nil || r != nil {
		t.Fatalf("the 11th unit: %+v", d)
	}
	if d.Hard.Used != 10 || d.Hard.Limit != 10 || !d.Hard.ResetsAt.Equal(resets) {
		t.Fatalf("exceeded %+v", *d.Hard)
	}
	st, _ := apperr.ToStatus(d.Hard.Err())
	if st.Code() != codes.ResourceExhausted || st.Message() != "quota events_accepted exceeded: 10 per day, resets at 2026-11-30T00:00:00Z" {
		t.Fatalf("status %v %q", st.Code(), st.Message())
	}
	var info *errdetails.ErrorInfo
	var retry *errdetails.RetryInfo
	for _, x := range st.Details() {
		switch x := x.(type) {
		case *errdetails.ErrorInfo:
			info = x
		case *errdetails.RetryInfo:
			retry = x
		}
	}
	want := map[string]string{"quota": "events_accepted", "limit": "10", "period": "day", "resets_at": "2026-11-30T00:00:00Z"}
	if info == nil || info.GetReason() != "QUOTA_EXCEEDED" || info.GetDomain() != apperr.Domain || len(info.GetMetadata()) != len(want) {
		t.Fatalf("error info %v", info)
	}
	for k, val := range want {
		if info.GetMetadata()[k] != val {
			t.Errorf("metadata %s = %q, want %q", k, info.GetMetadata()[k], val)
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() != resets.Sub(now) {
		t.Fatalf("retry info %v, want %s", retry, resets.Sub(now))
	}
	// A request of zero units and other meters and tenants are not limited.
	for _, c := range []struct {
		tenant, meter string
		n             int64
	}{{"t1", "events_accepted", 0}, {"t1", "messages_email", 100}, {"t2", "events_accepted", 100}} {
		if d := v.Check(c.tenant, c.meter, c.n, now); !d.Allow {
			t.Errorf("%+v refused", c)
		}
	}
}

// A soft quota warns (with the usage including the request) and lets the units through; the
// hard one of the same meter still refuses.
func TestSoftQuotaWarns(t *testing.T) {
	v := quota.NewView(nil)
	month := quota.Quota{Meter: "events_accepted", Limit: 5, Period: quota.Month, Used: 4, ResetsAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	v.Apply(quota.Key("t1"), snapshot(events(10, 4, true), month), false)
	now := asOf.Add(time.Second)
	d, r := v.Reserve("t1", "events_accepted", 2, now)
	if !d.Allow || len(d.Soft) != 1 || r == nil {
		t.Fatalf("decision %+v", d)
	}
	if s := d.Soft[0]; s.Hard || s.Used != 6 || s.Limit != 5 || s.Period != quota.Month {
		t.Fatalf("soft %+v", s)
	}
	if d := v.Check("t1", "events_accepted", 5, now); d.Allow || d.Hard == nil || len(d.Soft) != 1 {
		t.Fatalf("decision past both %+v", d)
	}
}

// The View counts its own units after as_of only: a newer snapshot that covers them drops them
// (they are billing's now), a straddling second counts whole, and Release takes units back.
func TestOwnUnitsCountUntilASnapshotCoversThem(t *testing.T) {
	v := quota.NewView(nil)
	v.Apply(quota.Key("t1"), snapshot(events(10, 0, true)), false)
	v.Record("t1", "events_accepted", 4, asOf.Add(-300*time.Millisecond)) // the second of as_of: counts
	v.Record("t1", "events_accepted", 5, asOf.Add(-2*time.Second))        // before as_of: billing's
	v.Record("t1", "events_accepted", 3, asOf.Add(10*time.Second))
	now := asOf.Add(20 * time.Second)
	if d := v.Check("t1", "events_accepted", 3, now); !d.Allow {
		t.Fatalf("7 used + 3 refused: %+v", d)
	}
	if d := v.Check("t1", "events_accepted", 4, now); d.Allow || d.Hard.Used != 7 {
		t.Fatalf("7 used + 4: %+v", d)
	}
	_, r := v.Reserve("t1", "events_accepted", 3, now)
	if d := v.Check("t1", "events_accepted", 1, now); d.Allow {
		t.Fatal("a reservation was not counted")
	}
	r.Release()
	r.Release()
	if d := v.Check("t1", "events_accepted", 3, now); !d.Allow {
		t.Fatalf("a released reservation still counts (or counted twice): %+v", d)
	}
	// billing has counted everything up to asOf+15s: 7 units, and the View keeps none of them.
	later, _ := json.Marshal(quota.Snapshot{AsOf: asOf.Add(15 * time.Second), Quotas: []quota.Quota{events(10, 7, true)}})
	v.Apply(quota.Key("t1"), later, false)
	if d := v.Check("t1", "events_accepted", 3, now); !d.Allow {
		t.Fatalf("units covered by the snapshot count twice: %+v", d)
	}
	// Deleting the key removes the quotas.
	v.Apply(quota.Key("t1"), nil, true)
	if d := v.Check("t1", "events_accepted", 1000, now); !d.Allow {
		t.Fatal("a deleted snapshot still limits")
	}
}

// A snapshot whose period ended counts from zero at its resets_at (billing has not published
// the new period yet), with only the View's own units of the new period.
func TestPeriodRollover(t *testing.T) {
	v := quota.NewView(nil)
	v.Apply(quota.Key("t1"), snapshot(events(10, 10, true)), false)
	before := resets.Add(-time.Minute)
	if d := v.Check("t1", "events_accepted", 1, before); d.Allow {
		t.Fatal("a full quota allowed a unit")
	}
	v.Record("t1", "events_accepted", 4, before) // the old period's
	after := resets.Add(time.Hour)
	v.Record("t1", "events_accepted", 6, after)
	if d := v.Check("t1", "events_accepted", 4, after); !d.Allow { // 6 of the new period + 4 fit 10
		t.Fatalf("new period: %+v", *d.Hard)
	}
	d := v.Check("t1", "events_accepted", 5, after)
	if d.Allow || d.Hard.Used != 6 || !d.Hard.ResetsAt.Equal(resets.AddDate(0, 0, 1)) {
		t.Fatalf("new period past the limit: %+v", d)
	}
	if got := quota.PeriodEnd(quota.Month, time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC)); !got.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("month end %v", got)
	}
}

// Concurrent reservations of one View never pass more than the limit together.
func TestConcurrentReservationsNeverPassTheLimit(t *testing.T) {
	v := quota.NewView(nil)
	v.Apply(quota.Key("t1"), snapshot(events(50, 0, true)), false)
	var passed atomic.Int64
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d, _ := v.Reserve("t1", "events_accepted", 1, asOf.Add(time.Second)); d.Allow {
				passed.Add(1)
			}
		}()
	}
	wg.Wait()
	if passed.Load() != 50 {
		t.Fatalf("%d of 200 passed, want 50", passed.Load())
	}
}

// Over real NATS: a View started before billing created the bucket enforces nothing, picks the
// bucket up once it exists, applies a published snapshot within the watch, and a deleted one
// removes the quotas.
func TestViewFollowsTheBucket(t *testing.T) {
	srv := natstest.StartServer(t)
	nc, js, err := natsjs.Connect(srv.ClientURL(), "quota-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v, err := quota.Watch(ctx, js, slog.New(slog.DiscardHandler), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if d := v.Check("t1", "events_accepted", 1, now); !d.Allow {
		t.Fatal("refused without a bucket")
	}
	kv, err := quota.OpenBucket(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	s := quota.Snapshot{AsOf: now, Quotas: []quota.Quota{{Meter: "events_accepted", Limit: 5, Hard: true, Period: quota.Day, Used: 5, ResetsAt: quota.PeriodEnd(quota.Day, now)}}}
	if err := quota.Publish(ctx, kv, "t1", s); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 15*time.Second, func() bool { return !v.Check("t1", "events_accepted", 1, time.Now()).Allow },
		"a published hard quota did not reach the view")
	if err := quota.Delete(ctx, kv, "t1"); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 5*time.Second, func() bool { return v.Check("t1", "events_accepted", 1, time.Now()).Allow },
		"a deleted quota still refuses")
	if err := quota.Delete(ctx, kv, "t1"); err != nil {
		t.Fatalf("deleting a deleted key: %v", err)
	}

	// A second View, started with the bucket there, has its contents when Watch returns.
	if err := quota.Publish(ctx, kv, "t2", s); err != nil {
		t.Fatal(err)
	}
	v2, err := quota.Watch(ctx, js, nil, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := v2.Snapshot("t2"); !ok {
		t.Fatal("Watch returned before loading the bucket")
	}
	if _, ok := v2.Snapshot("t1"); ok {
		t.Fatal("a deleted key was loaded")
	}
}
