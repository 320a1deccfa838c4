package postgres_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/campaignmesh/campaignmesh/services/billing"
	"github.com/campaignmesh/campaignmesh/services/billing/postgres"
)

func day(s string) time.Time {
	d, err := time.Parse(billing.DayLayout, s)
	if err != nil {
		panic(err)
	}
	return d
}

func TestRecordUnitsCountsAnIDOnce(t *testing.T) {
	s, ctx := MustOpen(t), context.Background()
	d := day("2026-11-29")
	u := []billing.Unit{{ID: "q1", TenantID: "t1", Day: d, Meter: billing.AnalyticsQueries, Units: 1},
		{ID: "q2", TenantID: "t1", Day: d, Meter: billing.AnalyticsQueries, Units: 1}}
	for range 2 {
		if _, err := s.RecordUnits(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.UnitCounts(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if got["t1"][billing.AnalyticsQueries] != 2 {
		t.Fatalf("units: %v, want 2 queries", got)
	}
}

// source is a usage source of the test (analytics' or delivery's counts stand behind a port).
type source struct {
	mu     sync.Mutex
	meters []billing.Meter
	counts map[string][]billing.SourceCounts // by day
	err    error
	asked  []string
}

func (s *source) Meters() []billing.Meter { return s.meters }

func (s *source) UsageCounts(_ context.Context, d time.Time) ([]billing.SourceCounts, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, d.Format(billing.DayLayout))
	return s.counts[d.Format(billing.DayLayout)], s.err
}

type row struct {
	Tenant, Day, Meter string
	Value              int64
	Closed             bool
}

func allUsage(t *testing.T, s *postgres.Store) []row {
	t.Helper()
	us, err := s.ListUsage(context.Background(), billing.UsageQuery{Start: day("2000-01-01"), End: day("2100-01-01")}, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]row, len(us))
	for i, u := range us {
		out[i] = row{u.TenantID, u.Day.Format(billing.DayLayout), string(u.Meter), u.Value, u.Closed}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Day != b.Day {
			return a.Day < b.Day
		}
		if a.Tenant != b.Tenant {
			return a.Tenant < b.Tenant
		}
		return a.Meter < b.Meter
	})
	return out
}

func TestMeteringRecomputesOpenDaysAndClosesOldOnes(t *testing.T) {
	s, ctx := MustOpen(t), context.Background()
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	batch := func(key, tenant, d string, n int64) billing.Unit {
		return billing.Unit{ID: key, TenantID: tenant, Day: day(d), Meter: billing.EventsAccepted, Units: n}
	}
	if _, err := s.RecordUnits(ctx, []billing.Unit{
		batch("a", "t1", "2026-11-29", 10), batch("b", "t1", "2026-11-28", 20), batch("c", "t2", "2026-11-26", 30),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordUnits(ctx, []billing.Unit{{ID: "q", TenantID: "t2", Day: day("2026-11-29"), Meter: billing.AnalyticsQueries, Units: 1}}); err != nil {
		t.Fatal(err)
	}
	analytics := &source{meters: []billing.Meter{billing.EventsStored, billing.StorageBytes}, counts: map[string][]billing.SourceCounts{
		"2026-11-29": {{TenantID: "t1", Values: map[billing.Meter]int64{billing.EventsStored: 9, billing.StorageBytes: 900}}},
		"2026-11-28": {{TenantID: "t1", Values: map[billing.Meter]int64{billing.EventsStored: 19, billing.StorageBytes: 1}}},
	}}
	m := billing.NewMetering(s, billing.DefaultMetering, slog.New(slog.NewTextHandler(io.Discard, nil)), analytics, nil).
		WithClock(func() time.Time { return now })
	for range 2 { // a second round (or a round after a crash) writes the same numbers
		if err := m.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := []row{
		// ended 2 days 12 h ago: past -close-after, final
		{"t2", "2026-11-26", "events_accepted", 30, true},
		{"t1", "2026-11-28", "events_accepted", 20, false},
		{"t1", "2026-11-28", "events_stored", 19, false}, // no storage_bytes: a gauge is measured only today
		{"t1", "2026-11-29", "events_accepted", 10, false},
		{"t1", "2026-11-29", "events_stored", 9, false},
		{"t1", "2026-11-29", "storage_bytes", 900, false},
		{"t2", "2026-11-29", "analytics_queries", 1, false},
	}
	if diff := cmp.Diff(want, allUsage(t, s)); diff != "" {
		t.Fatalf("usage (-want +got):\n%s", diff)
	}

	// A late batch of the closed day changes nothing; the source failing keeps its meters.
	if _, err := s.RecordUnits(ctx, []billing.Unit{batch("d", "t2", "2026-11-26", 5), batch("e", "t1", "2026-11-29", 1)}); err != nil {
		t.Fatal(err)
	}
	analytics.mu.Lock()
	analytics.err = errors.New("analytics down")
	analytics.mu.Unlock()
	if err := m.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	want[3].Value = 11
	if diff := cmp.Diff(want, allUsage(t, s)); diff != "" {
		t.Fatalf("usage after a late batch and a failing source (-want +got):\n%s", diff)
	}

	// Two days later 11-28 closes only once the source answers again.
	now = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	if err := m.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := allUsage(t, s); got[1].Closed {
		t.Fatalf("11-28 closed while its source failed: %+v", got[1])
	}
	analytics.mu.Lock()
	analytics.err = nil
	analytics.counts["2026-11-28"][0].Values[billing.EventsStored] = 21 // the writer drained a backlog
	analytics.mu.Unlock()
	if err := m.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	got := allUsage(t, s)
	if r := got[1]; !r.Closed || r.Value != 20 || got[2].Value != 21 || !got[2].Closed {
		t.Fatalf("11-28 after the source is back: %+v", got[:3])
	}
}

func TestUsageOfAVanishedUnitIsWrittenAsZero(t *testing.T) {
	s, ctx := MustOpen(t), context.Background()
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	delivery := &source{meters: []billing.Meter{billing.MessagesEmail, billing.ContactsStored}, counts: map[string][]billing.SourceCounts{
		"2026-11-29": {{TenantID: "t1", Values: map[billing.Meter]int64{billing.MessagesEmail: 3, billing.ContactsStored: 7}}},
	}}
	m := billing.NewMetering(s, billing.DefaultMetering, slog.New(slog.NewTextHandler(io.Discard, nil)), delivery).
		WithClock(func() time.Time { return now })
	if err := m.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	delivery.counts["2026-11-29"] = nil // every contact erased, the sends rolled back
	if err := m.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	want := []row{{"t1", "2026-11-29", "contacts_stored", 0, false}, {"t1", "2026-11-29", "messages_email", 0, false}}
	if diff := cmp.Diff(want, allUsage(t, s)); diff != "" {
		t.Fatalf("usage (-want +got):\n%s", diff)
	}
}
