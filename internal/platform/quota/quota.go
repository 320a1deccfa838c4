// Package quota is what billing publishes and the enforcing services (ingest, delivery) follow:
// each tenant's quotas with the usage billing has counted (Snapshot, in the JetStream key-value
// bucket QUOTAS, kv.go), and the View that decides whether a request of n more units fits.
//
// billing's usage trails the enforcing service by up to its metering interval, so a View adds
// the units its own process let through after the snapshot's as_of (Record, Reserve): a unit
// counted both by billing and by the View (an overlap) counts twice, which is conservative: one
// instance never lets more than a hard limit through. Several instances each add only their
// own units, so between two snapshots they may together pass a limit by what the others let
// through since as_of; the next snapshot brings them back.
package quota

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// The meters with hard quotas, and who enforces them (the names are services/billing's meters).
const (
	// EventsAccepted is enforced by ingest: events it would store.
	EventsAccepted = "events_accepted"
	// MessagesEmail and MessagesSMS are enforced by delivery: messages it would send.
	MessagesEmail = "messages_email"
	MessagesSMS   = "messages_sms"
)

// The periods a quota counts over; a period starts and resets at 00:00 UTC (of the day, of the
// first of the month).
const (
	Day   = "day"
	Month = "month"
)

// Quota is one limit of a tenant's plan with the usage billing counted in its current period.
type Quota struct {
	// Meter is the meter the limit is on (services/billing's meter names, e.g. events_accepted).
	Meter string
	// Limit is the units allowed per Period.
	Limit int64
	// Hard refuses what would go past Limit; a soft limit only warns.
	Hard bool
	// Period is Day or Month.
	Period string
	// Used is the units of the period billing counted up to the snapshot's AsOf.
	Used int64
	// ResetsAt is the end of the period Used belongs to.
	ResetsAt time.Time
}

// Snapshot is the value of a tenant's key in the bucket: its quotas as of a moment.
type Snapshot struct {
	// AsOf is the moment up to which the quotas' Used counts units.
	AsOf   time.Time
	Quotas []Quota
}

// The bucket's JSON (the plan of issue 18): times in UTC, as_of RFC 3339 with nanoseconds,
// resets_at RFC 3339.
type quotaJSON struct {
	Meter    string `json:"meter"`
	Limit    int64  `json:"limit"`
	Hard     bool   `json:"hard"`
	Period   string `json:"period"`
	Used     int64  `json:"used"`
	ResetsAt string `json:"resets_at"`
}

type snapshotJSON struct {
	AsOf   string      `json:"as_of"`
	Quotas []quotaJSON `json:"quotas"`
}

// MarshalJSON writes the bucket's JSON.
func (s Snapshot) MarshalJSON() ([]byte, error) {
	out := snapshotJSON{AsOf: s.AsOf.UTC().Format(time.RFC3339Nano), Quotas: make([]quotaJSON, 0, len(s.Quotas))}
	for _, q := range s.Quotas {
		out.Quotas = append(out.Quotas, quotaJSON{Meter: q.Meter, Limit: q.Limit, Hard: q.Hard, Period: q.Period, Used: q.Used,
			ResetsAt: q.ResetsAt.UTC().Format(time.RFC3339)})
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads the bucket's JSON; a quota with an unknown period or no reset time is an
// error (the whole snapshot is refused, the View keeps the previous one).
func (s *Snapshot) UnmarshalJSON(b []byte) error {
	var in snapshotJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	asOf, err := time.Parse(time.RFC3339Nano, in.AsOf)
	if err != nil {
		return fmt.Errorf("as_of: %w", err)
	}
	out := Snapshot{AsOf: asOf.UTC()}
	for i, q := range in.Quotas {
		if q.Period != Day && q.Period != Month {
			return fmt.Errorf("quotas[%d]: unknown period %q", i, q.Period)
		}
		resets, err := time.Parse(time.RFC3339Nano, q.ResetsAt)
		if err != nil {
			return fmt.Errorf("quotas[%d].resets_at: %w", i, err)
		}
		out.Quotas = append(out.Quotas, Quota{Meter: q.Meter, Limit: q.Limit, Hard: q.Hard, Period: q.Period, Used: q.Used, ResetsAt: resets.UTC()})
	}
	*s = out
	return nil
}

// PeriodEnd returns the end of the period that contains t (UTC): the next midnight, or the first
// of the next month.
func PeriodEnd(period string, t time.Time) time.Time {
	t = t.UTC()
	if period == Month {
		return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
}

// Exceeded is a quota a request went (soft) or would go (hard) past.
type Exceeded struct {
	Meter  string
	Limit  int64
	Hard   bool
	Period string
	// Used is the period's usage with the request's units (soft: they were let through) or
	// without them (hard: they were refused).
	Used     int64
	ResetsAt time.Time
	// RetryAfter is the time left until ResetsAt when the decision was made.
	RetryAfter time.Duration
}

// Reason is the ErrorInfo reason of a hard quota's refusal.
const Reason = "QUOTA_EXCEEDED"

// Err is the refusal of a request over a hard quota: RESOURCE_EXHAUSTED, "quota <meter>
// exceeded: <limit> per <period>, resets at <RFC3339>", ErrorInfo reason QUOTA_EXCEEDED with
// metadata quota, limit, period and resets_at, and RetryInfo until the reset (the gateway's
// Retry-After).
func (e Exceeded) Err() error {
	resets := e.ResetsAt.UTC().Format(time.RFC3339)
	err := apperr.New(apperr.ResourceExhausted, Reason, "quota %s exceeded: %d per %s, resets at %s", e.Meter, e.Limit, e.Period, resets)
	err.Metadata = map[string]string{"quota": e.Meter, "limit": strconv.FormatInt(e.Limit, 10), "period": e.Period, "resets_at": resets}
	err.RetryAfter = max(e.RetryAfter, time.Second)
	return err
}

// Decision is a View's answer for n more units of a meter.
type Decision struct {
	// Allow is false when a hard quota would be exceeded (Hard says which).
	Allow bool
	Hard  *Exceeded
	// Soft are the soft quotas the units go past (they are let through).
	Soft []Exceeded
}

// Reservation is units a View counted for a request before its work was done; Release takes
// them back when the work was not done (nothing published, nothing sent).
type Reservation struct {
	v             *View
	tenant, meter string
	second        int64
	n             int64
	once          sync.Once
}

// Release uncounts the reservation's units (at most once; a nil Reservation is fine).
func (r *Reservation) Release() {
	if r == nil || r.n == 0 {
		return
	}
	r.once.Do(func() { r.v.uncount(r.tenant, r.meter, r.second, r.n) })
}

// NewExceededCounter returns the enforcing service's campaignmesh_quota_exceeded_total
// {meter,kind="soft"|"hard"}: requests (ingest) or messages (delivery) that went past a soft
// quota, or were refused (or held) by a hard one.
func NewExceededCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "campaignmesh_quota_exceeded_total",
		Help: "Units over a tenant's quota: kind=soft went past a soft quota, kind=hard were refused or held by a hard one."},
		[]string{"meter", "kind"})
}

// Observe counts d's exceeded quotas in c (a nil c counts nothing).
func Observe(c *prometheus.CounterVec, meter string, d Decision) {
	if c == nil {
		return
	}
	if d.Hard != nil {
		c.WithLabelValues(meter, "hard").Inc()
	}
	if len(d.Soft) > 0 {
		c.WithLabelValues(meter, "soft").Inc()
	}
}
