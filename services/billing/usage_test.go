package billing

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseUsageQuery(t *testing.T) {
	for _, tc := range []struct {
		name       string
		start, end string
		meters     []string
		want       []string
	}{
		{"one day", "2026-11-29", "2026-11-29", nil, nil},
		{"a leap year's 366 days", "2028-01-01", "2028-12-31", []string{"events_accepted", "events_accepted"}, nil},
		{"367 days", "2026-01-01", "2027-01-02", nil, []string{"end_day"}},
		{"end before start", "2026-11-29", "2026-11-28", nil, []string{"end_day"}},
		{"missing days", "", "", nil, []string{"start_day", "end_day"}},
		{"not days", "29/11/2026", "2026-11-29T00:00:00Z", nil, []string{"start_day", "end_day"}},
		{"unknown meter", "2026-11-29", "2026-11-29", []string{"cpu"}, []string{"meters[0]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseUsageQuery("", tc.start, tc.end, tc.meters)
			got := violations(err)
			if tc.want == nil && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.want != nil && cmp.Diff(tc.want, got) != "" {
				t.Fatalf("violations %v, want %v", got, tc.want)
			}
		})
	}
	q, _ := ParseUsageQuery("t", "2026-11-01", "2026-11-02", []string{"messages_sms", "messages_sms"})
	if diff := cmp.Diff([]Meter{MessagesSMS}, q.Meters); diff != "" {
		t.Fatalf("meters (-want +got):\n%s", diff)
	}
}

func TestTotalsSumCountersAndTakeAGaugesLatestDay(t *testing.T) {
	d := func(s string) time.Time { x, _ := time.Parse(DayLayout, s); return x }
	rows := []Usage{
		{TenantID: "t", Day: d("2026-11-02"), Meter: EventsAccepted, Value: 5},
		{TenantID: "t", Day: d("2026-11-02"), Meter: ContactsStored, Value: 70},
		{TenantID: "t", Day: d("2026-11-01"), Meter: EventsAccepted, Value: 3},
		{TenantID: "t", Day: d("2026-11-01"), Meter: ContactsStored, Value: 50},
		{TenantID: "u", Day: d("2026-11-01"), Meter: EventsAccepted, Value: 1},
	}
	want := []Total{{"t", EventsAccepted, 8}, {"t", ContactsStored, 70}, {"u", EventsAccepted, 1}}
	if diff := cmp.Diff(want, Totals(rows)); diff != "" {
		t.Fatalf("totals (-want +got):\n%s", diff)
	}
}
