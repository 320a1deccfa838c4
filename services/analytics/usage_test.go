package analytics_test

import (
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/analytics"
)

// A usage day is a date, YYYY-MM-DD, from 2000-01-01 to the day after today (UTC).
func TestUsageDayGuard(t *testing.T) {
	now := time.Date(2026, 4, 2, 23, 0, 0, 0, time.UTC)
	for day, ok := range map[string]bool{"2026-04-02": true, "2026-04-03": true, "2000-01-01": true, "2026-04-04": false,
		"1999-12-31": false, "": false, "2026-4-2": false, "2026-02-30": false, "2026-04-02T00:00:00Z": false, "yesterday": false} {
		var v apperr.Violations
		got := analytics.ParseUsageDay(&v, day, now)
		if (v.Err() == nil) != ok {
			t.Errorf("day %q: %v, want ok %v", day, v.Err(), ok)
		}
		if ok && got.Format(time.DateOnly) != day {
			t.Errorf("day %q read as %s", day, got)
		}
	}
}
