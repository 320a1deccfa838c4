package nats

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/quota"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

func TestMeteringPublishesQuotasAndAuditsACrossingOnce(t *testing.T) {
	ctx := context.Background()
	js, store := connect(t), openStore(t)
	pub, err := OpenQuotaPublisher(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	if _, err := store.PutPlan(ctx, billing.Plan{TenantID: "t1", Name: "starter", Limits: []billing.Limit{
		{Meter: billing.EventsAccepted, Limit: 100, Hard: true, Period: billing.PeriodDay},
		{Meter: billing.AnalyticsQueries, Limit: 1, Period: billing.PeriodMonth},
	}}, 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := store.PutPlan(ctx, billing.Plan{TenantID: "t2"}, 0, nil); err != nil { // no limits: no quotas
		t.Fatal(err)
	}
	if _, err := store.RecordUnits(ctx, []billing.Unit{
		{ID: "a", TenantID: "t1", Day: billing.Day(now), Meter: billing.EventsAccepted, Units: 40},
		{ID: "b", TenantID: "t1", Day: billing.Day(now.AddDate(0, 0, -1)), Meter: billing.EventsAccepted, Units: 500}, // yesterday: another period
		{ID: "q1", TenantID: "t1", Day: day(t, "2026-11-20"), Meter: billing.AnalyticsQueries, Units: 1},
		{ID: "q2", TenantID: "t1", Day: day(t, "2026-11-29"), Meter: billing.AnalyticsQueries, Units: 1},
	}); err != nil {
		t.Fatal(err)
	}
	m := billing.NewMetering(store, billing.DefaultMetering, quiet).WithQuotas(pub, nil).
		WithClock(func() time.Time { return now }).
		WithAcceptedAsOf(func(time.Time) time.Time { return now.Add(-time.Second) })
	for range 2 {
		if err := m.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := js.KeyValue(ctx, quota.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "quota.t1")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(e.Value(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"as_of": "2026-11-29T11:59:59Z", "quotas": []any{
		map[string]any{"meter": "events_accepted", "limit": 100.0, "hard": true, "period": "day", "used": 40.0, "resets_at": "2026-11-30T00:00:00Z"},
		map[string]any{"meter": "analytics_queries", "limit": 1.0, "hard": false, "period": "month", "used": 2.0, "resets_at": "2026-12-01T00:00:00Z"},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("quota.t1 (-want +got):\n%s", diff)
	}
	if _, err := kv.Get(ctx, "quota.t2"); err != jetstream.ErrKeyNotFound {
		t.Fatalf("quota.t2 of a plan without limits: %v, want no key", err)
	}
	// The soft monthly limit was crossed: one record, however many rounds saw it.
	var crossings, records int
	if err := store.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM quota_crossings), (SELECT count(*) FROM audit_outbox)`).Scan(&crossings, &records); err != nil {
		t.Fatal(err)
	}
	if crossings != 1 || records != 1 {
		t.Fatalf("%d crossings and %d audit records, want 1 and 1", crossings, records)
	}
}
