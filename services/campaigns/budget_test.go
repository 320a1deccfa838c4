package campaigns

import (
	"testing"
	"time"
)

func budgeted(t *testing.T, zone string, b Budget, end string) Campaign {
	t.Helper()
	c := Campaign{ID: "c1", State: Active, Budget: b, Schedule: Schedule{TimeZone: zone, Start: mustWall(t, "2026-03-01T00:00")}}
	if end != "" {
		c.Schedule.End = mustWall(t, end)
	}
	if err := c.Schedule.resolve(); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPacing(t *testing.T) {
	t.Parallel()
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name                        string
		c                           Campaign
		now                         time.Time
		total, today                int64
		wantAllowance, wantAllowed  int64
		wantFraction                float64
		wantOnPace                  bool
		wantDayStart, wantDayLength string
	}{
		{
			name: "even daily budget at local noon",
			c:    budgeted(t, "Europe/Berlin", Budget{TotalMicros: 1e9, DailyMicros: 24e6, Currency: "EUR", Pacing: PacingEven}, ""),
			now:  at("2026-06-10T10:00:00Z"), total: 30e6, today: 10e6, // 12:00 CEST
			wantAllowance: 24e6, wantAllowed: 12e6, wantFraction: 0.5, wantOnPace: true,
			wantDayStart: "2026-06-09T22:00:00Z", wantDayLength: "24h0m0s",
		},
		{
			// The spring-forward day has 23 hours: at 12:00 EDT, 11 of them have passed.
			name: "even daily budget on a 23-hour day",
			c:    budgeted(t, "America/New_York", Budget{TotalMicros: 1e9, DailyMicros: 23e6, Currency: "USD", Pacing: PacingEven}, ""),
			now:  at("2026-03-08T16:00:00Z"), total: 12e6, today: 12e6,
			wantAllowance: 23e6, wantAllowed: 11e6, wantFraction: 11.0 / 23, wantOnPace: false,
			wantDayStart: "2026-03-08T05:00:00Z", wantDayLength: "23h0m0s",
		},
		{
			// The fall-back day has 25 hours: at 12:00 EST, 13 of them have passed.
			name: "even daily budget on a 25-hour day",
			c:    budgeted(t, "America/New_York", Budget{TotalMicros: 1e9, DailyMicros: 25e6, Currency: "USD", Pacing: PacingEven}, ""),
			now:  at("2026-11-01T17:00:00Z"), total: 5e6, today: 5e6,
			wantAllowance: 25e6, wantAllowed: 13e6, wantFraction: 13.0 / 25, wantOnPace: true,
			wantDayStart: "2026-11-01T04:00:00Z", wantDayLength: "25h0m0s",
		},
		{
			// 100 left at the start of the day (400 spent before), 4 local days left including
			// today (the 10th to the 13th; the end is 00:00 on the 14th): 25 a day, half gone.
			name: "even without a daily budget spreads the rest of the total over the days left",
			c:    budgeted(t, "UTC", Budget{TotalMicros: 500e6, Currency: "USD", Pacing: PacingEven}, "2026-06-14T00:00"),
			now:  at("2026-06-10T12:00:00Z"), total: 420e6, today: 20e6,
			wantAllowance: 25e6, wantAllowed: 12.5e6, wantFraction: 0.5, wantOnPace: false,
			wantDayStart: "2026-06-10T00:00:00Z", wantDayLength: "24h0m0s",
		},
		{
			name: "asap allows the whole daily budget at once",
			c:    budgeted(t, "UTC", Budget{TotalMicros: 1e9, DailyMicros: 50e6, Currency: "USD", Pacing: PacingASAP}, ""),
			now:  at("2026-06-10T01:00:00Z"), total: 40e6, today: 40e6,
			wantAllowance: 50e6, wantAllowed: 50e6, wantFraction: 1.0 / 24, wantOnPace: true,
			wantDayStart: "2026-06-10T00:00:00Z", wantDayLength: "24h0m0s",
		},
		{
			name: "the daily allowance never exceeds what is left of the total",
			c:    budgeted(t, "UTC", Budget{TotalMicros: 100e6, DailyMicros: 50e6, Currency: "USD", Pacing: PacingASAP}, ""),
			now:  at("2026-06-10T06:00:00Z"), total: 80e6, today: 0,
			wantAllowance: 20e6, wantAllowed: 20e6, wantFraction: 0.25, wantOnPace: true,
			wantDayStart: "2026-06-10T00:00:00Z", wantDayLength: "24h0m0s",
		},
		{
			name: "asap without daily budget or end allows the rest of the total",
			c:    budgeted(t, "UTC", Budget{TotalMicros: 100e6, Currency: "USD", Pacing: PacingASAP}, ""),
			now:  at("2026-06-10T06:00:00Z"), total: 70e6, today: 10e6,
			wantAllowance: 40e6, wantAllowed: 40e6, wantFraction: 0.25, wantOnPace: true,
			wantDayStart: "2026-06-10T00:00:00Z", wantDayLength: "24h0m0s",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := ComputePacing(tt.c, tt.now, tt.total, tt.today)
			if r.DailyAllowance != tt.wantAllowance || r.Allowed != tt.wantAllowed || r.OnPace != tt.wantOnPace {
				t.Errorf("allowance %d, allowed %d, on pace %v; want %d, %d, %v", r.DailyAllowance, r.Allowed, r.OnPace, tt.wantAllowance, tt.wantAllowed, tt.wantOnPace)
			}
			if d := r.DayFraction - tt.wantFraction; d > 1e-12 || d < -1e-12 {
				t.Errorf("day fraction %v, want %v", r.DayFraction, tt.wantFraction)
			}
			if got := r.DayStart.UTC().Format(time.RFC3339); got != tt.wantDayStart || r.DayEnd.Sub(r.DayStart).String() != tt.wantDayLength {
				t.Errorf("day %s lasting %s, want %s lasting %s", got, r.DayEnd.Sub(r.DayStart), tt.wantDayStart, tt.wantDayLength)
			}
		})
	}
}

func TestJudgeBudget(t *testing.T) {
	t.Parallel()
	c := budgeted(t, "America/New_York", Budget{TotalMicros: 100, DailyMicros: 10, Currency: "USD", Pacing: PacingASAP}, "")
	now := time.Date(2026, 3, 7, 23, 0, 0, 0, time.UTC) // 18:00 EST on the 7th
	if v := judgeBudget(c, now, 50, 9); v.exhausted != "" {
		t.Errorf("under both budgets: %+v", v)
	}
	v := judgeBudget(c, now, 50, 10)
	if v.exhausted != ExhaustedDaily || v.resume == nil || !v.resume.Equal(time.Date(2026, 3, 8, 5, 0, 0, 0, time.UTC)) {
		t.Errorf("daily budget spent: %+v, want a resume at the next New York midnight (05:00Z)", v)
	}
	if v := judgeBudget(c, now, 100, 10); v.exhausted != ExhaustedTotal || v.resume != nil {
		t.Errorf("total spent: %+v, want total without a resume time", v)
	}
}

func TestSpendCountsOnlyTheBudgetCurrency(t *testing.T) {
	t.Parallel()
	rows := []Spend{{"a", 5, "USD"}, {"a", 7, "EUR"}, {"b", 11, "USD"}, {"a", 1, "USD"}}
	if got := spendIn(rows, "a", "USD"); got != 6 {
		t.Errorf("spend of a in USD = %d, want 6", got)
	}
}
