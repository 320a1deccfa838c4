package delivery

import (
	"errors"
	"fmt"
	"time"
)

// QuietHours is a daily window of the recipient's local time in which nothing is sent, as
// offsets from local midnight: [Start, End). End before Start wraps midnight (21:00–08:00).
// The zero value is no quiet hours.
type QuietHours struct {
	Start, End time.Duration
}

// IsZero reports whether q is no quiet hours.
func (q QuietHours) IsZero() bool { return q.Start == 0 && q.End == 0 }

// Validate checks both ends are times of day and differ.
func (q QuietHours) Validate() error {
	if q.IsZero() {
		return nil
	}
	if q.Start < 0 || q.Start >= 24*time.Hour || q.End < 0 || q.End >= 24*time.Hour {
		return errors.New("quiet hours must be times of day (00:00 to 23:59)")
	}
	if q.Start == q.End {
		return errors.New("quiet hours must not start and end at the same time")
	}
	return nil
}

// contains reports whether the time of day d is quiet.
func (q QuietHours) contains(d time.Duration) bool {
	if q.Start < q.End {
		return d >= q.Start && d < q.End
	}
	return d >= q.Start || d < q.End
}

// at returns the instant of local time of day d on t's local day: built from the wall clock
// (midnight plus d would be an hour off on a DST day), time.Date normalising a wall time the
// change skips.
func at(t time.Time, d time.Duration) time.Time {
	y, m, day := t.Date()
	return time.Date(y, m, day, int(d/time.Hour), int(d%time.Hour/time.Minute), int(d%time.Minute/time.Second), int(d%time.Second), t.Location())
}

func timeOfDay(t time.Time) time.Duration {
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute +
		time.Duration(t.Second())*time.Second + time.Duration(t.Nanosecond())
}

// SendTime is a recipient's not_before: the earliest instant at or after earliest that is
// outside quiet hours in the recipient's zone (an IANA name; "" is UTC). With localTime set
// (send-at-local-time, an offset from local midnight) it is first the next occurrence of
// that local time at or after earliest, then moved out of quiet hours.
func SendTime(earliest time.Time, zone string, quiet QuietHours, localTime *time.Duration) (time.Time, error) {
	if err := quiet.Validate(); err != nil {
		return time.Time{}, err
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return time.Time{}, fmt.Errorf("time zone %q: unknown", zone)
	}
	t := earliest.In(loc)
	if localTime != nil {
		if *localTime < 0 || *localTime >= 24*time.Hour {
			return time.Time{}, errors.New("send-at local time must be a time of day")
		}
		c := at(t, *localTime)
		if c.Before(t) {
			c = at(t.AddDate(0, 0, 1), *localTime)
		}
		t = c
	}
	if !quiet.IsZero() && quiet.contains(timeOfDay(t)) {
		end := at(t, quiet.End)
		if !end.After(t) {
			end = at(t.AddDate(0, 0, 1), quiet.End)
		}
		t = end
	}
	return t, nil
}
