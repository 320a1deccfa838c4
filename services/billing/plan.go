package billing

import (
	"strconv"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// Period is how long a limit's usage accumulates before it starts again from zero.
type Period string

// The periods. Both are UTC: a day from midnight, a month from its first day.
const (
	PeriodDay   Period = "day"
	PeriodMonth Period = "month"
)

// Valid reports whether p is a known period.
func (p Period) Valid() bool { return p == PeriodDay || p == PeriodMonth }

// Bounds returns the UTC start of the period holding t and the start of the next one (when the
// usage resets).
func (p Period) Bounds(t time.Time) (start, end time.Time) {
	t = t.UTC()
	if p == PeriodMonth {
		start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0)
	}
	start = Day(t)
	return start, start.AddDate(0, 0, 1)
}

// Limit caps one meter's usage per period. A hard limit is enforced (the services that produce
// the units refuse what would go past it); a soft one only warns.
type Limit struct {
	Meter  Meter
	Limit  int64
	Hard   bool
	Period Period
}

// Plan is a tenant's limits. Revision counts its changes (the API's etag).
type Plan struct {
	TenantID   string
	Name       string
	Limits     []Limit
	Revision   int64
	UpdateTime time.Time
	UpdatedBy  string
}

// Limit returns the plan's limit on m, if any.
func (p Plan) Limit(m Meter) (Limit, bool) {
	for _, l := range p.Limits {
		if l.Meter == m {
			return l, true
		}
	}
	return Limit{}, false
}

// Enforced reports whether a hard limit on m can be enforced: only the services accepting
// events (ingest) and sending messages (delivery) check quotas before they act.
func (m Meter) Enforced() bool {
	return m == EventsAccepted || m == MessagesEmail || m == MessagesSMS
}

// Bounds on a plan's fields.
const (
	MaxPlanNameLen = 200
	MaxLimitValue  = int64(1) << 53 // exact in JSON numbers read as doubles (the QUOTAS bucket's readers)
)

// ValidatePlan checks a plan as a caller wrote it: a tenant, a name of bounded length, and at
// most one limit per known meter, each non-negative with a known period, hard only on an
// enforced meter. Every violation is reported, by the field path of the API's Plan message.
func ValidatePlan(p Plan) error {
	var v apperr.Violations
	if p.TenantID == "" {
		v.Add("plan.tenant_id", "required")
	} else if len(p.TenantID) > 64 {
		v.Add("plan.tenant_id", "at most 64 bytes")
	}
	if len(p.Name) > MaxPlanNameLen {
		v.Add("plan.name", "at most %d bytes", MaxPlanNameLen)
	}
	seen := map[Meter]bool{}
	for i, l := range p.Limits {
		field := func(f string) string { return "plan.limits[" + strconv.Itoa(i) + "]." + f }
		switch {
		case !l.Meter.Valid():
			v.Add(field("meter"), "unknown meter %q", l.Meter)
		case seen[l.Meter]:
			v.Add(field("meter"), "a second limit on %s (one limit per meter)", l.Meter)
		}
		seen[l.Meter] = true
		if l.Limit < 0 || l.Limit > MaxLimitValue {
			v.Add(field("limit"), "must be 0 to %d", MaxLimitValue)
		}
		if !l.Period.Valid() {
			v.Add(field("period"), "must be day or month")
		}
		if l.Hard && l.Meter.Valid() && !l.Meter.Enforced() {
			v.Add(field("hard"), "%s cannot be enforced: only events_accepted, messages_email and messages_sms take hard limits", l.Meter)
		}
	}
	return v.Err()
}
