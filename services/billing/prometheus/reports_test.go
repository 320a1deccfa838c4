package prometheus_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/campaignmesh/campaignmesh/services/billing"
	billingprom "github.com/campaignmesh/campaignmesh/services/billing/prometheus"
)

func TestReportMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := billingprom.NewReportMetrics(reg)
	m.MeterEventSent(billing.EventsAccepted, billing.ReportAcked)
	m.ReportsPending(3, 90*time.Second)
	want := `
# HELP billing_reports_pending Meter-event reports written to the outbox and not yet acknowledged by Stripe.
# TYPE billing_reports_pending gauge
billing_reports_pending 3
# HELP billing_report_oldest_pending_seconds Age of the oldest pending meter-event report (0 when none).
# TYPE billing_report_oldest_pending_seconds gauge
billing_report_oldest_pending_seconds 90
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "billing_reports_pending", "billing_report_oldest_pending_seconds"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(reg, "billing_meter_events_total"); n != len(billing.Meters())*4 {
		t.Fatalf("%d series, want every meter × outcome from the start", n)
	}
}
