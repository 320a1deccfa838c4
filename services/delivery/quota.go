package delivery

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaignmesh/campaignmesh/internal/platform/quota"
)

// QuotaMeter is the meter a channel's messages count on (billing's, and the tenants' quotas').
func (ch Channel) QuotaMeter() string {
	if ch == ChannelSMS {
		return quota.MessagesSMS
	}
	return quota.MessagesEmail
}

// Quotas are the tenants' message quotas as the sender, the test sends and the sending reports
// apply them: billing's QUOTAS bucket followed by a quota.View (nil: no quotas).
//
// A hard quota of a channel's meter holds the tenant's campaigns on that channel: their
// pending recipients are not claimed and stay pending (GetCampaignDelivery names the quota and
// its reset), and sending resumes by itself when the period resets or a plan change raises the
// limit. A soft quota only counts in campaignmesh_quota_exceeded_total{kind="soft"}.
type Quotas struct {
	View *quota.View
	// Exceeded is campaignmesh_quota_exceeded_total (nil: not counted): kind="hard" counts the
	// messages given back uncalled by a hard quota, kind="soft" those sent past a soft one.
	Exceeded *prometheus.CounterVec
}

// held reports the hard quota that holds the tenant's messages of meter at now, if any.
func (q Quotas) held(tenantID, meter string, now time.Time) *quota.Exceeded {
	if q.View == nil {
		return nil
	}
	return q.View.Check(tenantID, meter, 1, now).Hard
}

// reserve counts one message of meter for the tenant, or says which hard quota refuses it.
func (q Quotas) reserve(tenantID, meter string, now time.Time) (*quota.Reservation, *quota.Exceeded) {
	if q.View == nil {
		return nil, nil
	}
	d, r := q.View.Reserve(tenantID, meter, 1, now)
	quota.Observe(q.Exceeded, meter, d)
	return r, d.Hard
}
