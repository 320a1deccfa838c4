package campaigns

import (
	"fmt"
	"strings"
	"sync"
	"time"

	// The campaign's zone must resolve the same on every host, also in minimal containers
	// without /usr/share/zoneinfo.
	_ "time/tzdata"
)

// WallClock is a date and time of day as read off a wall clock, without a zone: a schedule's
// start and end. The zero value means "not set".
type WallClock struct {
	Year   int
	Month  time.Month
	Day    int
	Hour   int
	Minute int
	Second int
}

// wallClockLayouts are the accepted forms, seconds optional.
var wallClockLayouts = []string{"2006-01-02T15:04:05", "2006-01-02T15:04"}

// ParseWallClock parses "YYYY-MM-DDTHH:MM[:SS]" (no offset, no fraction).
func ParseWallClock(s string) (WallClock, error) {
	if len(s) > 19 || strings.ContainsAny(s, "Zz+") {
		return WallClock{}, fmt.Errorf("parse wall-clock time %q: want YYYY-MM-DDTHH:MM[:SS] without an offset", s)
	}
	for _, layout := range wallClockLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			if t.Year() < 1970 {
				return WallClock{}, fmt.Errorf("parse wall-clock time %q: year before 1970", s)
			}
			return wallClockOf(t), nil
		}
	}
	return WallClock{}, fmt.Errorf("parse wall-clock time %q: want YYYY-MM-DDTHH:MM[:SS] without an offset", s)
}

func wallClockOf(t time.Time) WallClock {
	return WallClock{t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second()}
}

// IsZero reports whether w is unset.
func (w WallClock) IsZero() bool { return w == WallClock{} }

// String formats w as "YYYY-MM-DDTHH:MM:SS", or "" when unset.
func (w WallClock) String() string {
	if w.IsZero() {
		return ""
	}
	return w.naive().Format(wallClockLayouts[0])
}

// naive is w read as if it were UTC: a point to do calendar arithmetic on.
func (w WallClock) naive() time.Time {
	return time.Date(w.Year, w.Month, w.Day, w.Hour, w.Minute, w.Second, 0, time.UTC)
}

// Before reports whether w is earlier than o on the calendar.
func (w WallClock) Before(o WallClock) bool { return w.naive().Before(o.naive()) }

// In resolves w in loc to an instant, deterministically across daylight-saving changes (Go's
// time.Date leaves both cases unspecified):
//   - a time skipped by a spring-forward change moves forward by the length of the gap
//     (02:30 on 2026-03-08 in America/New_York is 03:30 EDT);
//   - a time that occurs twice at a fall-back change is its first occurrence (01:30 on
//     2026-11-01 in America/New_York is 01:30 EDT).
//
// It assumes at most one offset change within a day either side, which holds for every
// IANA zone.
func (w WallClock) In(loc *time.Location) time.Time {
	naive := w.naive()
	_, before := naive.Add(-26 * time.Hour).In(loc).Zone()
	_, after := naive.Add(26 * time.Hour).In(loc).Zone()
	early := naive.Add(-time.Duration(before) * time.Second) // read with the earlier offset
	late := naive.Add(-time.Duration(after) * time.Second)   // read with the later offset
	earlyOK := wallClockOf(early.In(loc)) == w
	lateOK := wallClockOf(late.In(loc)) == w
	switch {
	case earlyOK && lateOK:
		if late.Before(early) {
			return late
		}
		return early
	case earlyOK:
		return early
	case lateOK:
		return late
	}
	// In the gap: with the offset from before the change, the same wall-clock reading lands
	// the gap's length after it.
	return early
}

var zones sync.Map // name → *time.Location

// LoadZone returns the IANA time zone name. "Local" and "" are refused: a campaign's zone
// must mean the same on every host.
func LoadZone(name string) (*time.Location, error) {
	if l, ok := zones.Load(name); ok {
		return l.(*time.Location), nil
	}
	if name == "" || name == "Local" || len(name) > 64 {
		return nil, fmt.Errorf("load time zone %q: not an IANA time zone name", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("load time zone %q: %w", name, err)
	}
	zones.Store(name, loc)
	return loc, nil
}

// DayBounds returns the local day of t in loc: from its midnight to the next midnight, as
// instants. The day lasts 23 or 25 hours at daylight-saving changes; a midnight that the zone
// skips is the first instant after the gap.
func DayBounds(t time.Time, loc *time.Location) (start, end time.Time) {
	local := t.In(loc)
	y, m, d := local.Date()
	start = WallClock{Year: y, Month: m, Day: d}.In(loc)
	next := time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
	end = wallClockOf(next).In(loc)
	return start, end
}

// NextMidnight returns the first local midnight in loc after t.
func NextMidnight(t time.Time, loc *time.Location) time.Time {
	_, end := DayBounds(t, loc)
	return end
}

// localDate is the calendar date of t in loc, as a UTC midnight for day arithmetic.
func localDate(t time.Time, loc *time.Location) time.Time {
	y, m, d := t.In(loc).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// daysLeft counts the local days in loc from the day of now to the day of the last instant
// before end, both included; at least 1.
func daysLeft(now, end time.Time, loc *time.Location) int64 {
	if !end.After(now) {
		return 1
	}
	last := localDate(end.Add(-time.Nanosecond), loc)
	first := localDate(now, loc)
	n := int64(last.Sub(first)/(24*time.Hour)) + 1
	return max(n, 1)
}
