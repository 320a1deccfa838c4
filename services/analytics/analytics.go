// Package analytics answers campaign metrics: it validates and bounds each question, decides
// whether the hourly rollups can answer it or the raw events table must, and turns the store's
// aggregates into metrics. It is plain Go with its own request and result types and declares
// the store it needs (Store); the SQL lives in the clickhouse package and the wire format in
// grpcapi.
package analytics

import (
	"context"
	"slices"
	"time"
)

// Event types as stored.
const (
	TypeImpression = "impression"
	TypeClick      = "click"
	TypeConversion = "conversion"
)

// Granularity is a series bucket size.
type Granularity int

// Granularities.
const (
	Minute Granularity = iota + 1
	Hour
	Day
)

// Dimension is what an aggregate is grouped by.
type Dimension int

// Dimensions. Campaign, Variant and Type are columns of the rollups too.
const (
	NoDimension Dimension = iota
	Campaign
	CampaignVariant
	Bucket
	EventName
	EventType
	Variant
	App
	Device
	Locale
	Property
)

// rollupDimensions are answerable from the rollups.
var rollupDimensions = []Dimension{NoDimension, Campaign, CampaignVariant, Bucket, EventType, Variant}

// Query is one aggregate question for the store: events of a tenant in [Start, End) (no upper
// bound when OpenEnd), optionally of some campaigns, grouped by a dimension.
type Query struct {
	TenantID    string
	CampaignIDs []string
	Start, End  time.Time
	OpenEnd     bool

	Dimension   Dimension
	PropertyKey string         // for Property
	Granularity Granularity    // for Bucket
	Location    *time.Location // for Bucket

	// Rollup answers from the hourly rollups (Start and End whole hours in UTC).
	Rollup bool
	// ExactUsers counts unique users exactly; otherwise approximately (docs/api.md, "Campaign
	// metrics", has the error), which the store merges several times faster.
	ExactUsers bool
	// Total asks for one more row after the groups: the total over all of them (Total set),
	// whose unique users count each user once across the groups.
	Total bool
	// OrderBy and Limit make a top-N (by OrderBy descending, then key ascending); 0: all rows.
	OrderBy Metric
	Limit   int
}

// Metric names a metric to order by.
type Metric int

// Metrics.
const (
	MetricEvents Metric = iota
	MetricImpressions
	MetricClicks
	MetricConversions
	MetricConversionValue
	MetricUniqueUsers
	MetricSpend
)

// Aggregate is the store's answer for one group: K1 and K2 are the group's key (campaign and
// variant, the bucket start as Unix seconds, or the dimension's value), or the total over the
// groups (Total; see Query.Total).
type Aggregate struct {
	K1, K2                                   string
	Total                                    bool
	Events, Impressions, Clicks, Conversions int64
	UniqueUsers                              int64
	Currencies                               []string // parallel to the two below
	ConversionValue, Spend                   []int64
}

// FunnelQuery is an ordered funnel over the raw events.
type FunnelQuery struct {
	TenantID   string
	Start, End time.Time
	OpenEnd    bool // no end: first steps up to now (and events stamped a little ahead)
	Window     time.Duration
	Steps      []FunnelStep
}

// FunnelStep is an event name, optionally in one campaign.
type FunnelStep struct {
	EventName, CampaignID string
}

// Store reads the events.
type Store interface {
	// Aggregate answers q, one row per group.
	Aggregate(ctx context.Context, q Query) ([]Aggregate, error)
	// Funnel returns, per step, the users who reached it in order within the window.
	Funnel(ctx context.Context, q FunnelQuery) ([]int64, error)
	// Delete starts a deletion unless one for the same request is running, and reports progress.
	Delete(ctx context.Context, d Deletion) (DeletionStatus, error)
	// MatchUsers returns the user ids of q.UserIDs with an event matching q, each once.
	MatchUsers(ctx context.Context, q BehaviourQuery) ([]string, error)
}

// canUseRollup reports whether the hourly rollups hold exactly the events q asks for: whole
// UTC hours, a dimension they keep, and buckets made of whole hours.
func canUseRollup(q Query) bool {
	if !slices.Contains(rollupDimensions, q.Dimension) || !wholeHour(q.Start) || (!q.OpenEnd && !wholeHour(q.End)) {
		return false
	}
	if q.Dimension == Bucket {
		return q.Granularity != Minute && wholeHourOffsets(q.Location, q.Start, q.End)
	}
	return true
}

func wholeHour(t time.Time) bool { return t.Equal(t.Truncate(time.Hour)) }

// wholeHourOffsets reports whether loc's UTC offset is a whole number of hours throughout
// [from, to], so every UTC hour lies in one local hour and one local day. Offsets are sampled
// daily: zones with half-hour offsets keep them for months.
func wholeHourOffsets(loc *time.Location, from, to time.Time) bool {
	for t := from; t.Before(to.Add(24 * time.Hour)); t = t.Add(24 * time.Hour) {
		if t.After(to) {
			t = to
		}
		if _, off := t.In(loc).Zone(); off%3600 != 0 {
			return false
		}
	}
	return true
}

// Deletion names events to delete: a tenant's data subject (user or anonymous id), or a
// tenant's events in [Start, End).
type Deletion struct {
	TenantID   string
	SubjectID  string
	Start, End time.Time
}

// DeletionStatus is a deletion's progress.
type DeletionStatus struct {
	Done          bool
	RemainingRows int64
	MutationID    string
}
