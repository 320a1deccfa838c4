package campaigns

import (
	"testing"
	"time"
)

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := LoadZone(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func mustWall(t *testing.T, s string) WallClock {
	t.Helper()
	w, err := ParseWallClock(s)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestParseWallClock(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"2026-03-08T09:00":    "2026-03-08T09:00:00",
		"2026-03-08T09:00:30": "2026-03-08T09:00:30",
	} {
		w, err := ParseWallClock(in)
		if err != nil || w.String() != want {
			t.Errorf("ParseWallClock(%q) = %v, %v; want %s", in, w, err, want)
		}
	}
	for _, bad := range []string{"", "2026-03-08", "2026-03-08T09:00Z", "2026-03-08T09:00:00+01:00", "2026-03-08T09:00:00.5",
		"2026-02-30T09:00", "1969-12-31T23:00", "09:00", "2026-03-08 09:00"} {
		if _, err := ParseWallClock(bad); err == nil {
			t.Errorf("ParseWallClock(%q) accepted", bad)
		}
	}
}

func TestWallClockInResolvesDaylightSavingChangesDeterministically(t *testing.T) {
	t.Parallel()
	tests := []struct {
		zone, wall, want string
	}{
		{"America/New_York", "2026-03-08T01:59:59", "2026-03-08T06:59:59Z"}, // EST, just before the gap
		{"America/New_York", "2026-03-08T02:00", "2026-03-08T07:00:00Z"},    // skipped: 03:00 EDT
		{"America/New_York", "2026-03-08T02:30", "2026-03-08T07:30:00Z"},    // skipped: 03:30 EDT
		{"America/New_York", "2026-03-08T03:00", "2026-03-08T07:00:00Z"},    // EDT
		{"America/New_York", "2026-03-08T09:00", "2026-03-08T13:00:00Z"},    // EDT
		{"America/New_York", "2026-03-07T09:00", "2026-03-07T14:00:00Z"},    // EST
		{"America/New_York", "2026-11-01T00:59", "2026-11-01T04:59:00Z"},    // EDT
		{"America/New_York", "2026-11-01T01:30", "2026-11-01T05:30:00Z"},    // twice: first (EDT)
		{"America/New_York", "2026-11-01T02:00", "2026-11-01T07:00:00Z"},    // EST
		{"America/New_York", "2026-11-01T09:00", "2026-11-01T14:00:00Z"},    // EST
		{"Europe/Berlin", "2026-03-29T02:30", "2026-03-29T01:30:00Z"},       // skipped: 03:30 CEST
		{"Europe/Berlin", "2026-10-25T02:30", "2026-10-25T00:30:00Z"},       // twice: first (CEST)
		{"Australia/Lord_Howe", "2026-10-04T02:15", "2026-10-03T15:45:00Z"}, // half-hour gap: 02:45 +11
		{"Asia/Kolkata", "2026-03-08T09:00", "2026-03-08T03:30:00Z"},        // no DST
		{"UTC", "2026-03-08T09:00", "2026-03-08T09:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.zone+" "+tt.wall, func(t *testing.T) {
			t.Parallel()
			got := mustWall(t, tt.wall).In(mustZone(t, tt.zone)).UTC().Format(time.RFC3339)
			if got != tt.want {
				t.Errorf("%s in %s = %s, want %s", tt.wall, tt.zone, got, tt.want)
			}
		})
	}
}

func TestDayBoundsFollowDaylightSaving(t *testing.T) {
	t.Parallel()
	ny := mustZone(t, "America/New_York")
	tests := []struct {
		at         string
		start, end string
		hours      float64
	}{
		{"2026-03-08T12:00:00Z", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z", 23},
		{"2026-11-01T12:00:00Z", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z", 25},
		{"2026-06-01T03:59:59Z", "2026-05-31T04:00:00Z", "2026-06-01T04:00:00Z", 24}, // still May 31 locally
	}
	for _, tt := range tests {
		at, _ := time.Parse(time.RFC3339, tt.at)
		start, end := DayBounds(at, ny)
		if start.UTC().Format(time.RFC3339) != tt.start || end.UTC().Format(time.RFC3339) != tt.end || end.Sub(start).Hours() != tt.hours {
			t.Errorf("DayBounds(%s) = %s .. %s (%v h), want %s .. %s (%v h)", tt.at, start.UTC(), end.UTC(), end.Sub(start).Hours(), tt.start, tt.end, tt.hours)
		}
	}
	// A zone whose midnight is skipped: the day starts right after the gap.
	santiago := mustZone(t, "America/Santiago")
	start, _ := DayBounds(time.Date(2026, 9, 6, 12, 0, 0, 0, time.UTC), santiago)
	if got := start.In(santiago).Format("15:04"); got != "01:00" {
		t.Errorf("Santiago's day of the spring-forward change starts at %s, want 01:00", got)
	}
}

func TestDaysLeftCountsLocalDays(t *testing.T) {
	t.Parallel()
	ny := mustZone(t, "America/New_York")
	now := time.Date(2026, 3, 7, 20, 0, 0, 0, time.UTC) // 15:00 EST on the 7th
	for end, want := range map[string]int64{
		"2026-03-07T23:00": 1,
		"2026-03-08T00:00": 1, // ends at midnight: the 8th is not a day of the schedule
		"2026-03-08T00:01": 2,
		"2026-03-10T12:00": 4,
	} {
		if got := daysLeft(now, mustWall(t, end).In(ny), ny); got != want {
			t.Errorf("daysLeft to %s = %d, want %d", end, got, want)
		}
	}
}

func TestLoadZoneRefusesHostDependentNames(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"", "Local", "Mars/Olympus", "../../etc/passwd"} {
		if _, err := LoadZone(bad); err == nil {
			t.Errorf("LoadZone(%q) accepted", bad)
		}
	}
}
