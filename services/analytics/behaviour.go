package analytics

import (
	"context"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// Limits of a behaviour match (MatchBehaviour, internal: delivery's segments).
const (
	// MaxBehaviourUsers is the most user ids one match asks about.
	MaxBehaviourUsers = 1000
	// MaxBehaviourRange is the longest range a match covers: a segment looks back at most a
	// year (delivery's MaxBehaviourDays), with room for a leap year and the clock.
	MaxBehaviourRange = 400 * 24 * time.Hour
	maxUserIDLen      = 256
	maxEventTypeLen   = 64
)

// BehaviourRequest asks which of a tenant's users did an event of a type (and name, and for a
// campaign, when given) within a range.
type BehaviourRequest struct {
	TenantID             string
	EventType, EventName string
	CampaignID           string
	Start, End           RequestTime
	UserIDs              []string
}

// BehaviourQuery is a validated BehaviourRequest, as the store runs it.
type BehaviourQuery struct {
	TenantID             string
	EventType, EventName string
	CampaignID           string
	Start, End           time.Time
	// OpenEnd: the range runs until now (End is then only the validation's now).
	OpenEnd bool
	UserIDs []string
}

// MatchBehaviour answers MatchBehaviour (internal: delivery): the user ids among the request's
// that have such an event in the range, each once. It counts against the tenant's concurrent
// query limit like any query.
func (s *Service) MatchBehaviour(ctx context.Context, req BehaviourRequest) ([]string, error) {
	var v apperr.Violations
	if t := req.TenantID; t == "" || len(t) > maxIDLen {
		v.Add("tenant_id", "is required")
	}
	if n := len(req.EventType); n == 0 || n > maxEventTypeLen || !utf8.ValidString(req.EventType) {
		v.Add("event_type", "must be 1-%d characters", maxEventTypeLen)
	}
	if len(req.EventName) > maxIDLen || !utf8.ValidString(req.EventName) {
		v.Add("event_name", "must be at most %d characters", maxIDLen)
	}
	if len(req.CampaignID) > maxIDLen {
		v.Add("campaign_id", "must be at most %d characters", maxIDLen)
	}
	if !req.Start.Given {
		v.Add("start_time", "is required")
	}
	ids := slices.Clone(req.UserIDs)
	if len(ids) == 0 || len(ids) > MaxBehaviourUsers {
		v.Add("user_ids", "must be 1-%d user ids", MaxBehaviourUsers)
	}
	for _, id := range ids {
		if id == "" || len(id) > maxUserIDLen || !utf8.ValidString(id) {
			v.Add("user_ids", "each must be 1-%d characters", maxUserIDLen)
			break
		}
	}
	from, to, open := s.timeRange(&v, req.Start, req.End, MaxBehaviourRange)
	if err := v.Err(); err != nil {
		return nil, err
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	release, err := s.acquire(req.TenantID)
	if err != nil {
		return nil, err
	}
	defer release()
	return s.store.MatchUsers(ctx, BehaviourQuery{TenantID: req.TenantID, EventType: req.EventType, EventName: req.EventName,
		CampaignID: req.CampaignID, Start: from, End: to, OpenEnd: open, UserIDs: ids})
}
