package billing

import (
	"context"
	"strconv"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// DayLayout is how days are written in the API and the store: YYYY-MM-DD (UTC).
const DayLayout = "2006-01-02"

// MaxUsageDays bounds a usage query's range (inclusive days).
const MaxUsageDays = 366

// Day returns the UTC day holding t, as its midnight.
func Day(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// Usage is one tenant's value of one meter on one UTC day. Closed values are final.
type Usage struct {
	TenantID string
	Day      time.Time
	Meter    Meter
	Value    int64
	Closed   bool
}

// UsageQuery selects usage: one tenant or, empty, every tenant; the days Start to End
// inclusive; the meters listed or, empty, all.
type UsageQuery struct {
	TenantID   string
	Start, End time.Time
	Meters     []Meter
}

// ParseUsageQuery validates a usage query as the API carries it (days as YYYY-MM-DD, meters
// by name): both days required, start not after end, at most MaxUsageDays days, known meters.
func ParseUsageQuery(tenantID, startDay, endDay string, meters []string) (UsageQuery, error) {
	var v apperr.Violations
	q := UsageQuery{TenantID: tenantID}
	parse := func(field, s string) time.Time {
		if s == "" {
			v.Add(field, "required (YYYY-MM-DD)")
			return time.Time{}
		}
		d, err := time.Parse(DayLayout, s)
		if err != nil {
			v.Add(field, "must be a day as YYYY-MM-DD")
		}
		return d
	}
	q.Start, q.End = parse("start_day", startDay), parse("end_day", endDay)
	if !q.Start.IsZero() && !q.End.IsZero() {
		switch days := int(q.End.Sub(q.Start)/(24*time.Hour)) + 1; {
		case days < 1:
			v.Add("end_day", "must not be before start_day")
		case days > MaxUsageDays:
			v.Add("end_day", "the range is %d days; at most %d", days, MaxUsageDays)
		}
	}
	if len(meters) > len(Meters()) {
		v.Add("meters", "at most %d meters", len(Meters()))
	}
	seen := map[Meter]bool{}
	for i, m := range meters {
		if !Meter(m).Valid() {
			v.Add("meters["+strconv.Itoa(i)+"]", "unknown meter %q", m)
			continue
		}
		if !seen[Meter(m)] {
			q.Meters = append(q.Meters, Meter(m))
		}
		seen[Meter(m)] = true
	}
	return q, v.Err()
}

// Total is one tenant's total of one meter over a usage query's days: the sum of a counter's
// days, or a gauge's last value (a level does not add up over days).
type Total struct {
	TenantID string
	Meter    Meter
	Value    int64
}

// Totals sums rows per tenant and meter (rows in any order). A gauge's total is the value of
// its latest day.
func Totals(rows []Usage) []Total {
	type key struct {
		tenant string
		meter  Meter
	}
	idx := map[key]int{}
	last := map[key]time.Time{}
	var out []Total
	for _, r := range rows {
		k := key{r.TenantID, r.Meter}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, Total{TenantID: r.TenantID, Meter: r.Meter})
		}
		if r.Meter.Gauge() {
			if !ok || r.Day.After(last[k]) {
				out[i].Value, last[k] = r.Value, r.Day
			}
			continue
		}
		out[i].Value += r.Value
	}
	return out
}

// Unit is units of a counter recorded by another service on the USAGE stream (a batch's
// events_accepted by an analytics writer, one analytics query), keyed by its id.
type Unit struct {
	ID       string
	TenantID string
	// Day is the UTC day of Time, the moment the units were used.
	Day   time.Time
	Meter Meter
	Units int64
	Time  time.Time
}

// UsageRecorder stores the units the usage consumer reads, each fetch of them in one
// transaction, and a unit already stored (a redelivery) as it was. It returns how many were new.
type UsageRecorder interface {
	RecordUnits(ctx context.Context, units []Unit) (int, error)
}
