package billing

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

func violations(err error) []string {
	var e *apperr.Error
	if !errors.As(err, &e) {
		return nil
	}
	out := []string{}
	for _, v := range e.Violations {
		out = append(out, v.Field)
	}
	return out
}

func TestValidatePlan(t *testing.T) {
	day := func(m Meter, hard bool) Limit { return Limit{Meter: m, Limit: 10, Hard: hard, Period: PeriodDay} }
	for _, tc := range []struct {
		name string
		plan Plan
		want []string
	}{
		{"hard on every enforced meter, soft on the others", Plan{TenantID: "t", Limits: []Limit{
			day(EventsAccepted, true), day(MessagesEmail, true), day(MessagesSMS, true), day(EventsStored, false),
			day(ContactsStored, false), day(AnalyticsQueries, false), day(StorageBytes, false)}}, nil},
		{"no limits", Plan{TenantID: "t"}, nil},
		{"no tenant", Plan{}, []string{"plan.tenant_id"}},
		{"hard on a meter nothing enforces", Plan{TenantID: "t", Limits: []Limit{day(StorageBytes, true), day(AnalyticsQueries, true)}},
			[]string{"plan.limits[0].hard", "plan.limits[1].hard"}},
		{"two limits on one meter", Plan{TenantID: "t", Limits: []Limit{day(EventsAccepted, true), {Meter: EventsAccepted, Limit: 1, Period: PeriodMonth}}},
			[]string{"plan.limits[1].meter"}},
		{"unknown meter, negative limit, unknown period", Plan{TenantID: "t", Limits: []Limit{{Meter: "cpu", Limit: -1, Period: "week"}}},
			[]string{"plan.limits[0].meter", "plan.limits[0].limit", "plan.limits[0].period"}},
		{"a name too long", Plan{TenantID: "t", Name: string(make([]byte, MaxPlanNameLen+1))}, []string{"plan.name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidatePlan(tc.plan)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !apperr.HasCode(err, apperr.Invalid) {
				t.Fatalf("err %v, want INVALID_ARGUMENT", err)
			}
			if diff := cmp.Diff(tc.want, violations(err)); diff != "" {
				t.Fatalf("violations (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPeriodBounds(t *testing.T) {
	at := time.Date(2026, 12, 31, 23, 59, 59, 0, time.FixedZone("x", 3600)) // 22:59:59 UTC
	for _, tc := range []struct {
		p          Period
		start, end string
	}{
		{PeriodDay, "2026-12-31T00:00:00Z", "2027-01-01T00:00:00Z"},
		{PeriodMonth, "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
	} {
		s, e := tc.p.Bounds(at)
		if s.Format(time.RFC3339) != tc.start || e.Format(time.RFC3339) != tc.end {
			t.Errorf("%s: %s – %s, want %s – %s", tc.p, s, e, tc.start, tc.end)
		}
	}
}

func TestCrossed(t *testing.T) {
	for _, tc := range []struct {
		hard       bool
		limit, use int64
		want       bool
	}{
		{false, 10, 10, false}, {false, 10, 11, true}, // soft: past the limit
		{true, 10, 9, false}, {true, 10, 10, true}, // hard: reached (nothing more is let through)
		{true, 0, 0, false}, {true, 0, 1, true},
	} {
		if got := Crossed(Limit{Limit: tc.limit, Hard: tc.hard}, tc.use); got != tc.want {
			t.Errorf("hard=%v limit %d used %d: crossed %v, want %v", tc.hard, tc.limit, tc.use, got, tc.want)
		}
	}
}
