package delivery_test

import (
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/services/delivery"
)

func TestSendTime(t *testing.T) {
	t.Parallel()
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	local := func(s string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04", s, ny)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	hm := func(h, m int) time.Duration { return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute }
	night := delivery.QuietHours{Start: hm(21, 0), End: hm(8, 0)}
	lunch := delivery.QuietHours{Start: hm(12, 0), End: hm(13, 0)}
	ten := hm(10, 0)
	cases := []struct {
		name     string
		earliest time.Time
		quiet    delivery.QuietHours
		at       *time.Duration
		want     time.Time
	}{
		{"no rules", local("2026-05-04 23:30"), delivery.QuietHours{}, nil, local("2026-05-04 23:30")},
		{"outside quiet hours", local("2026-05-04 12:00"), night, nil, local("2026-05-04 12:00")},
		{"late evening waits for morning", local("2026-05-04 23:30"), night, nil, local("2026-05-05 08:00")},
		{"early morning waits for morning", local("2026-05-04 07:59"), night, nil, local("2026-05-04 08:00")},
		{"end of quiet hours is not quiet", local("2026-05-04 08:00"), night, nil, local("2026-05-04 08:00")},
		{"start of quiet hours is quiet", local("2026-05-04 21:00"), night, nil, local("2026-05-05 08:00")},
		{"window within a day", local("2026-05-04 12:30"), lunch, nil, local("2026-05-04 13:00")},
		{"send at local time later today", local("2026-05-04 09:00"), night, &ten, local("2026-05-04 10:00")},
		{"send at local time tomorrow", local("2026-05-04 11:00"), night, &ten, local("2026-05-05 10:00")},
		{"send at a quiet local time", local("2026-05-04 11:00"), delivery.QuietHours{Start: hm(9, 0), End: hm(11, 0)}, &ten, local("2026-05-05 11:00")},
		{"across the spring DST change", local("2026-03-07 22:00"), night, nil, local("2026-03-08 08:00")},
	}
	for _, tc := range cases {
		got, err := delivery.SendTime(tc.earliest.UTC(), "America/New_York", tc.quiet, tc.at)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !got.Equal(tc.want) {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
		if got.Before(tc.earliest) {
			t.Errorf("%s: %s is before the earliest %s", tc.name, got, tc.earliest)
		}
	}
	// A local time the spring change skips (02:30) still gives an instant after earliest.
	skipped := hm(2, 30)
	got, err := delivery.SendTime(local("2026-03-08 00:00"), "America/New_York", delivery.QuietHours{}, &skipped)
	if err != nil || got.Before(local("2026-03-08 00:00")) || got.After(local("2026-03-08 04:00")) {
		t.Errorf("skipped local time: %s %v", got, err)
	}
	if _, err := delivery.SendTime(time.Now(), "Mars/Olympus", night, nil); err == nil {
		t.Error("unknown zone accepted")
	}
	for _, q := range []delivery.QuietHours{{Start: hm(9, 0), End: hm(9, 0)}, {Start: -time.Minute, End: hm(8, 0)}, {Start: hm(21, 0), End: 24 * time.Hour}} {
		if _, err := delivery.SendTime(time.Now(), "", q, nil); err == nil {
			t.Errorf("quiet hours %v accepted", q)
		}
	}
	if got, err := delivery.SendTime(local("2026-05-04 23:30"), "", night, nil); err != nil || !got.Equal(time.Date(2026, 5, 5, 8, 0, 0, 0, time.UTC)) {
		t.Errorf("UTC recipient (03:30 UTC is quiet until 08:00 UTC): %s %v", got, err)
	}
}
