package campaigns

import (
	"context"
	"math/big"
	"time"
)

// Spend is one campaign's spend in one currency, in micros.
type Spend struct {
	CampaignID string
	Micros     int64
	Currency   string
}

// SpendSource answers how much campaigns spent. Spend is defined by the analytics service:
// the `value` (micros and currency) of a campaign's impression and click events is their
// cost; the value of conversion events is conversion value, never spend. Implemented over
// mTLS by package analyticsclient (AnalyticsService.GetCampaignSpend).
type SpendSource interface {
	// Spend returns the spend of each of a tenant's campaigns in [from, to): a row per
	// campaign and currency; campaigns without spend may be missing.
	Spend(ctx context.Context, tenantID string, campaignIDs []string, from, to time.Time) ([]Spend, error)
}

// MaxSpendBatch is the most campaigns one Spend call asks about (analytics' limit).
const MaxSpendBatch = 1000

// spendIn sums rows by campaign, keeping only those in currency. Spend in any other currency
// does not count against a budget in this one: there is no exchange rate to apply.
func spendIn(rows []Spend, campaignID, currency string) int64 {
	var n int64
	for _, r := range rows {
		if r.CampaignID == campaignID && r.Currency == currency {
			n += r.Micros
		}
	}
	return n
}

// spendWindowSlack extends spend windows past now: event times are the clients'
// (skew-corrected, clamped to shortly ahead of reception).
const spendWindowSlack = 10 * time.Minute

// totalWindow is where a campaign's spend so far is looked up: from its launch to just after
// now, widened to whole UTC hours so that analytics can answer from its hourly rollups.
func totalWindow(c Campaign, now time.Time) (time.Time, time.Time) {
	return c.spendSince().Add(-spendWindowSlack).Truncate(time.Hour), windowEnd(now)
}

// windowEnd is the end of every spend window at now: just after now, on a whole hour.
func windowEnd(now time.Time) time.Time {
	end := now.Add(spendWindowSlack)
	if t := end.Truncate(time.Hour); !t.Equal(end) {
		return t.Add(time.Hour)
	}
	return end
}

// PacingReport is a campaign's spend against its budget at one instant. See CampaignPacing in
// the proto for the rules.
type PacingReport struct {
	CampaignID     string
	State          State
	AsOf           time.Time
	Currency       string
	Pacing         Pacing
	TotalBudget    int64
	TotalSpend     int64
	DayStart       time.Time
	DayEnd         time.Time
	DayFraction    float64
	SpendToday     int64
	DailyAllowance int64
	Allowed        int64
	OnPace         bool
}

// ComputePacing applies the pacing rules to a campaign at now, given its spend since it was
// created (total) and today (today, part of total).
//
// The daily allowance is the daily budget, capped at what is left of the total at the start
// of today; without a daily budget it is what is left of the total at the start of today,
// spread evenly over the local days left in the schedule (today included) when there is an
// end. EVEN pacing allows allowance × the share of today elapsed (real time: the day may last
// 23 or 25 hours), ASAP pacing the whole allowance.
func ComputePacing(c Campaign, now time.Time, total, today int64) PacingReport {
	loc := zoneOf(c)
	start, end := DayBounds(now, loc)
	r := PacingReport{
		CampaignID: c.ID, State: c.State, AsOf: now, Currency: c.Budget.Currency, Pacing: c.Budget.Pacing,
		TotalBudget: c.Budget.TotalMicros, TotalSpend: total, SpendToday: today, DayStart: start, DayEnd: end,
	}
	elapsed, length := now.Sub(start), end.Sub(start)
	r.DayFraction = float64(elapsed) / float64(length)
	left := max(c.Budget.TotalMicros-(total-today), 0) // left of the total at the start of today
	switch {
	case c.Budget.DailyMicros > 0:
		r.DailyAllowance = min(c.Budget.DailyMicros, left)
	case c.Schedule.EndTime != nil:
		r.DailyAllowance = left / daysLeft(now, *c.Schedule.EndTime, loc)
	default:
		r.DailyAllowance = left
	}
	r.Allowed = r.DailyAllowance
	if c.Budget.Pacing == PacingEven {
		// allowance × elapsed / length, exactly: the product overflows int64.
		x := new(big.Int).Mul(big.NewInt(r.DailyAllowance), big.NewInt(int64(elapsed)))
		r.Allowed = x.Quo(x, big.NewInt(int64(length))).Int64()
	}
	r.OnPace = r.SpendToday <= r.Allowed
	return r
}

// budgetVerdict is what the budgets say about a campaign given its spend.
type budgetVerdict struct {
	exhausted Exhaustion // "" when both budgets have room
	resume    *time.Time // for a daily exhaustion: the next local midnight
}

// judgeBudget compares spend (total since creation, and today) with the campaign's budgets at
// now. The total budget wins over the daily one: it is not reset at midnight.
func judgeBudget(c Campaign, now time.Time, total, today int64) budgetVerdict {
	b := c.Budget
	switch {
	case b.TotalMicros > 0 && total >= b.TotalMicros:
		return budgetVerdict{exhausted: ExhaustedTotal}
	case b.DailyMicros > 0 && today >= b.DailyMicros:
		next := NextMidnight(now, zoneOf(c))
		return budgetVerdict{exhausted: ExhaustedDaily, resume: &next}
	}
	return budgetVerdict{}
}

// dayWindow is the local day of now in the campaign's zone.
func dayWindow(c Campaign, now time.Time) (time.Time, time.Time) {
	return DayBounds(now, zoneOf(c))
}

// zoneOf is the campaign's time zone; UTC for a draft without one.
func zoneOf(c Campaign) *time.Location {
	if loc, err := LoadZone(c.Schedule.TimeZone); err == nil {
		return loc
	}
	return time.UTC
}
