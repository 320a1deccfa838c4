package billing_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/billing"
	"github.com/campaignmesh/campaignmesh/services/billing/stripe"
)

// TestReconcileExplainsEveryDifference builds one row of each kind over the real store, the
// real reporter and the Stripe stand-in's event summaries, and checks each row's numbers and
// explanation.
func TestReconcileExplainsEveryDifference(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	old := e.today.AddDate(0, 0, -40)
	e.customer("t1", "cus_1")
	e.customer("t3", "cus_3")
	e.usage("t1", billing.EventsAccepted, e.today, 10)
	e.usage("t1", billing.MessagesEmail, e.today, 5)
	e.usage("t1", billing.MessagesSMS, e.today, 5)
	e.usage("t1", billing.ContactsStored, e.today, 4)
	e.usage("t1", billing.StorageBytes, old, 100)
	e.usage("t2", billing.EventsAccepted, e.today, 7)
	rep := e.reporter(5*time.Second, time.Second, billing.ReporterConfig{})
	if err := rep.Round(ctx); err != nil {
		t.Fatal(err)
	}
	e.usage("t1", billing.MessagesEmail, e.today, 8) // grown, not reported yet
	e.usage("t1", billing.MessagesSMS, e.today, 3)   // shrunk after its report
	// Stripe got 2 contacts from elsewhere (another integration, a hand-made event).
	c := e.client(5 * time.Second)
	if _, err := c.ReportMeterEvent(ctx, stripe.MeterEvent{EventName: "cm_contacts_stored", CustomerID: "cus_1", Value: 2, Identifier: "manual", Timestamp: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// An ack recorded for units Stripe does not show.
	e.usage("t1", billing.AnalyticsQueries, e.today, 3)
	e.exec(`INSERT INTO meter_reports (identifier, tenant_id, meter, day, from_value, to_value, customer_id, event_name, event_time, status)
		VALUES ('lost', 't1', 'analytics_queries', $1::date, 0, 3, 'cus_1', 'cm_analytics_queries', now(), 'acked')`, e.today.Format(time.DateOnly))
	// A report Stripe refused.
	e.usage("t3", billing.EventsAccepted, e.today, 9)
	e.exec(`INSERT INTO meter_reports (identifier, tenant_id, meter, day, from_value, to_value, customer_id, event_name, event_time, status, last_error)
		VALUES ('refused', 't3', 'events_accepted', $1::date, 0, 9, 'cus_3', 'cm_events_accepted', now(), 'rejected', 'no such customer')`, e.today.Format(time.DateOnly))

	rec := billing.NewReconciler(e.store, stripe.NewUsage(c), rep.EventName, nil, nil)
	rows, err := rec.Reconcile(ctx, old, e.today, "")
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		ours, reported, stripe, diff int64
		noStripe                     bool
		explanation                  string
	}
	wants := map[string]want{
		"t1/events_accepted":   {10, 10, 10, 0, false, billing.ExplainMatch},
		"t1/messages_email":    {8, 5, 5, 3, false, billing.ExplainPending},
		"t1/messages_sms":      {3, 5, 5, -2, false, billing.ExplainDecreasedAfterReport},
		"t1/contacts_stored":   {4, 4, 6, -2, false, billing.ExplainStripeMore},
		"t1/analytics_queries": {3, 3, 0, 3, false, billing.ExplainStripeLess},
		"t1/storage_bytes":     {100, 0, 0, 100, false, billing.ExplainTooOld},
		"t2/events_accepted":   {7, 0, 0, 7, true, billing.ExplainNoCustomer},
		"t3/events_accepted":   {9, 0, 0, 9, false, billing.ExplainRejected},
	}
	if len(rows) != len(wants) {
		t.Fatalf("%d rows, want %d: %+v", len(rows), len(wants), rows)
	}
	for _, r := range rows {
		w, ok := wants[r.TenantID+"/"+string(r.Meter)]
		if !ok {
			t.Errorf("unexpected row %+v", r)
			continue
		}
		if r.Ours != w.ours || r.Reported != w.reported || r.Difference != w.diff || r.Explanation != w.explanation ||
			(r.Stripe == nil) != w.noStripe || (r.Stripe != nil && *r.Stripe != w.stripe) {
			t.Errorf("%s/%s: %+v (stripe %v), want %+v", r.TenantID, r.Meter, r, r.Stripe, w)
		}
	}

	// One tenant only.
	rows, err = rec.Reconcile(ctx, e.today, e.today, "t3")
	if err != nil || len(rows) != 1 || rows[0].TenantID != "t3" {
		t.Fatalf("t3 only: %+v %v", rows, err)
	}

	// The daily job stores a day; the listing pages through it.
	n, err := rec.ReconcileAndStore(ctx, e.today)
	if err != nil || n != 7 {
		t.Fatalf("stored %d: %v, want 7", n, err)
	}
	day := e.today.Format(time.DateOnly)
	var got []billing.Reconciliation
	tok := ""
	for range 10 {
		p, err := rec.List(ctx, day, "", "", 3, tok)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p.Rows...)
		if tok = p.NextPageToken; tok == "" {
			break
		}
	}
	if len(got) != 7 || got[0].TenantID != "t1" || got[6].TenantID != "t3" {
		t.Fatalf("listed %+v", got)
	}
	if _, err := rec.List(ctx, day, "", "", 3, "garbage!"); !apperr.HasCode(err, apperr.Invalid) {
		t.Fatalf("bad token: %v, want INVALID", err)
	}
}

func TestParseDayRange(t *testing.T) {
	for _, c := range []struct {
		start, end string
		ok         bool
	}{
		{"2026-11-01", "", true}, {"2026-11-01", "2026-11-30", true}, {"2026-11-30", "2026-11-01", false},
		{"2026-11-01", "2027-03-01", false}, {"nov", "", false}, {"2026-11-01", "x", false},
	} {
		_, _, err := billing.ParseDayRange(c.start, c.end, billing.MaxReconcileDays)
		if (err == nil) != c.ok || (err != nil && !apperr.HasCode(err, apperr.Invalid)) {
			t.Errorf("%s..%s: %v, want ok=%v", c.start, c.end, err, c.ok)
		}
	}
}

func TestDailyJobStoresYesterday(t *testing.T) {
	e := newEnv(t)
	yesterday := e.today.AddDate(0, 0, -1)
	e.customer("t1", "cus_1")
	e.usage("t1", billing.EventsAccepted, yesterday, 6)
	clock := meshtest.NewClock(e.today.Add(30 * time.Minute))
	rec := billing.NewReconciler(e.store, stripe.NewUsage(e.client(5*time.Second)), func(m billing.Meter) string { return "cm_" + string(m) }, clock.Now, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rec.RunDaily(ctx, 10*time.Minute) }()
	meshtest.Eventually(t, 10*time.Second, func() bool {
		p, err := rec.List(context.Background(), yesterday.Format(time.DateOnly), "", "", 0, "")
		return err == nil && len(p.Rows) == 1 && p.Rows[0].Ours == 6 && p.Rows[0].Explanation == billing.ExplainPending
	}, "yesterday's reconciliation is stored")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("RunDaily: %v", err)
	}
}
