package prometheus

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/campaignmesh/campaignmesh/services/billing"
)

// Every meter has its soft series and every enforced meter its hard one from the start, at 0;
// a crossing counts in its kind's series.
func TestQuotaCrossings(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	if n := testutil.CollectAndCount(reg, "billing_quota_crossings_total"); n != len(billing.Meters())+3 {
		t.Fatalf("%d series at start, want %d", n, len(billing.Meters())+3)
	}
	m.QuotaCrossed(billing.EventsAccepted, true)
	m.QuotaCrossed(billing.StorageBytes, false)
	got := testutil.ToFloat64(m.crossings.WithLabelValues("events_accepted", "hard")) + testutil.ToFloat64(m.crossings.WithLabelValues("storage_bytes", "soft"))
	if got != 2 {
		t.Fatalf("crossings counted %v, want 2", got)
	}
}

// The last successful round's time is what BillingMeteringStalled watches.
func TestMeteringSucceeded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	if v := testutil.ToFloat64(m.lastSuccess); v != 0 {
		t.Fatalf("last success before any round = %v, want 0", v)
	}
	at := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	m.MeteringSucceeded(at)
	if v := testutil.ToFloat64(m.lastSuccess); v != float64(at.Unix()) {
		t.Fatalf("last success = %v, want %d", v, at.Unix())
	}
}
