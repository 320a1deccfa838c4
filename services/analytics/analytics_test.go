package analytics

import (
	"testing"
	"time"
)

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestBucketStartsAcrossDST(t *testing.T) {
	ny := mustZone(t, "America/New_York")
	at := func(s string) time.Time { v, _ := time.Parse(time.RFC3339, s); return v }
	// Fall back on 2026-11-01: 01:00–02:00 local happens twice; hour buckets stay one hour long.
	hours := bucketStarts(Hour, ny, at("2026-11-01T04:30:00Z"), at("2026-11-01T08:00:00Z"))
	want := []string{"2026-11-01T04:00:00Z", "2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z"}
	if len(hours) != len(want) {
		t.Fatalf("hours = %v, want %v", hours, want)
	}
	for i := range want {
		if !hours[i].Equal(at(want[i])) {
			t.Errorf("hour %d = %s, want %s", i, hours[i], want[i])
		}
	}
	// Days: 25 hours on the fall-back day, 23 on the spring-forward day.
	days := bucketStarts(Day, ny, at("2026-10-31T12:00:00Z"), at("2026-11-02T12:00:00Z"))
	if got := days[2].Sub(days[1]); got != 25*time.Hour {
		t.Errorf("2026-11-01 in New York lasts %s, want 25h (%v)", got, days)
	}
	days = bucketStarts(Day, ny, at("2026-03-07T12:00:00Z"), at("2026-03-09T12:00:00Z"))
	if got := days[2].Sub(days[1]); got != 23*time.Hour {
		t.Errorf("2026-03-08 in New York lasts %s, want 23h (%v)", got, days)
	}
	if !days[0].Equal(at("2026-03-07T05:00:00Z")) {
		t.Errorf("first day starts %s, want local midnight 05:00Z", days[0])
	}
}

func TestCanUseRollup(t *testing.T) {
	hour := time.Date(2026, 3, 28, 10, 0, 0, 0, time.UTC)
	kolkata, berlin := mustZone(t, "Asia/Kolkata"), mustZone(t, "Europe/Berlin")
	for _, tc := range []struct {
		name string
		q    Query
		want bool
	}{
		{"whole hours", Query{Start: hour, End: hour.Add(5 * time.Hour), Dimension: Campaign}, true},
		{"open end", Query{Start: hour, OpenEnd: true, Dimension: CampaignVariant}, true},
		{"partial start", Query{Start: hour.Add(time.Minute), End: hour.Add(5 * time.Hour), Dimension: Campaign}, false},
		{"partial end", Query{Start: hour, End: hour.Add(90 * time.Minute), Dimension: Campaign}, false},
		{"raw-only dimension", Query{Start: hour, OpenEnd: true, Dimension: Device}, false},
		{"minute buckets", Query{Start: hour, OpenEnd: true, Dimension: Bucket, Granularity: Minute, Location: time.UTC}, false},
		{"days in Berlin", Query{Start: hour, End: hour.Add(72 * time.Hour), Dimension: Bucket, Granularity: Day, Location: berlin}, true},
		{"hours in Kolkata", Query{Start: hour, End: hour.Add(72 * time.Hour), Dimension: Bucket, Granularity: Hour, Location: kolkata}, false},
	} {
		if got := canUseRollup(tc.q); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
