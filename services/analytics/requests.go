package analytics

import "time"

// RequestTime is a time as a request gives it. The zero value is "not given"; Invalid marks a
// value that was given but is no time at all (a wire timestamp outside its range), which the
// rules report on the request's field like any other bad value.
type RequestTime struct {
	Time    time.Time
	Given   bool
	Invalid bool
}

// At is a given, valid request time.
func At(t time.Time) RequestTime { return RequestTime{Time: t, Given: true} }

// usable reports whether t was given and is a time.
func (t RequestTime) usable() bool { return t.Given && !t.Invalid }

// Source is the table that answers a query: the hourly rollups or the raw events.
type Source int

// Sources. SourceAuto (a request's default) lets the service choose the rollups whenever they
// hold exactly the events asked for; an answer always names Raw or Rollup.
const (
	SourceAuto Source = iota
	SourceRaw
	SourceRollup
)

// UnknownMetric is what a decoder passes for a metric it does not know; it is refused.
const UnknownMetric Metric = -1

// valid reports whether m is a metric a breakdown can order by.
func (m Metric) valid() bool { return m >= MetricEvents && m <= MetricSpend }

// SummaryRequest asks for the totals of some campaigns (GetCampaignSummary).
type SummaryRequest struct {
	CampaignIDs []string
	Start, End  RequestTime
	ByVariant   bool
	Source      Source
	// ExactUniqueUsers counts unique users exactly instead of approximately (slower).
	ExactUniqueUsers bool
}

// SummaryResult is the total over the campaigns and a row per campaign (per variant when
// asked), in the order the campaigns were named; a campaign without events has a zero row.
type SummaryResult struct {
	Source    Source
	Total     Metrics
	Campaigns []CampaignMetrics
}

// CampaignMetrics are the metrics of one campaign, or of one of its variants.
type CampaignMetrics struct {
	CampaignID, Variant string
	Metrics             Metrics
}

// SeriesRequest asks for metrics per time bucket (GetMetricSeries). TimeZone "" is UTC.
type SeriesRequest struct {
	CampaignID  string
	Start, End  RequestTime
	Granularity Granularity
	TimeZone    string
	Source      Source
	// ExactUniqueUsers counts unique users exactly instead of approximately (slower).
	ExactUniqueUsers bool
}

// SeriesResult has one bucket for every bucket start in the range, empty ones included.
type SeriesResult struct {
	Source  Source
	Buckets []BucketMetrics
}

// BucketMetrics are the metrics of the bucket starting at Start.
type BucketMetrics struct {
	Start   time.Time
	Metrics Metrics
}

// BreakdownRequest asks for the top values of a dimension by a metric (GetBreakdown). Limit 0
// is 10.
type BreakdownRequest struct {
	CampaignID  string
	Start, End  RequestTime
	Dimension   Dimension
	PropertyKey string
	Metric      Metric
	Limit       int
	Source      Source
	// ExactUniqueUsers counts unique users exactly instead of approximately (slower).
	ExactUniqueUsers bool
}

// BreakdownResult lists the top values, largest first.
type BreakdownResult struct {
	Source Source
	Rows   []BreakdownRow
}

// BreakdownRow is one value of the dimension and its metrics.
type BreakdownRow struct {
	Value   string
	Metrics Metrics
}

// FunnelRequest asks how many users went through the steps in order (GetFunnel).
// WindowSeconds 0 is one day.
type FunnelRequest struct {
	Steps         []FunnelStep
	Start, End    RequestTime
	WindowSeconds int64
}

// FunnelResult has a result per requested step, in order.
type FunnelResult struct {
	Steps []FunnelStepResult
}

// FunnelStepResult is how many users reached a step, and the conversion rates to it.
type FunnelStepResult struct {
	Step                                        FunnelStep
	Users                                       int64
	ConversionFromStart, ConversionFromPrevious float64
}

// WatchRequest asks for a campaign's metrics pushed every interval (WatchCampaignMetrics).
// IntervalSeconds 0 is 5 s; no Start is the start of the current UTC day.
type WatchRequest struct {
	CampaignID      string
	IntervalSeconds int64
	Start           RequestTime
	// ExactUniqueUsers counts unique users exactly instead of approximately (slower).
	ExactUniqueUsers bool
}

// SpendRequest asks for the spend of a tenant's campaigns (GetCampaignSpend, internal: the
// tenant is named by the calling service).
type SpendRequest struct {
	TenantID    string
	CampaignIDs []string
	Start, End  RequestTime
}

// CampaignSpend is a campaign's spend in one currency.
type CampaignSpend struct {
	CampaignID  string
	SpendMicros int64
	Currency    string
}

// DeleteRequest names the events to delete (DeleteEvents, internal: dsr): a data subject's,
// or those in a time range.
type DeleteRequest struct {
	TenantID, SubjectID string
	Start, End          RequestTime
}

// Metrics are the figures of a group of events.
type Metrics struct {
	Events, Impressions, Clicks, Conversions, UniqueUsers int64
	// CTR is clicks per impression, CVR conversions per click (0 when undefined).
	CTR, CVR float64
	// ConversionValue and Spend have one entry per currency with a non-zero amount, by currency.
	ConversionValue, Spend []Money
	// CostPerConversion is set when the spend is in one currency and there were conversions.
	CostPerConversion *Money
}

// Money is an amount in millionths of a currency unit.
type Money struct {
	AmountMicros int64
	Currency     string
}
