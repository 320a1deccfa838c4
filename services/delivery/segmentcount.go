package delivery

import (
	"context"
	"fmt"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// SegmentCount is what a campaign sent now to a segment would reach.
type SegmentCount struct {
	// Contacts match the filter.
	Contacts int
	// Eligible counts, per channel, the contacts Eligible on it (and not on the platform's
	// suppression list, when the audiences have one).
	Eligible map[Channel]int
}

// CountSegment counts the contacts of a saved segment of the tenant (segmentID) or of an
// ad-hoc filter (f, when segmentID is ""), as they are now: evaluated as a send evaluates it
// (behaviour included), each member checked for eligibility per channel.
func (a *Audiences) CountSegment(ctx context.Context, tenantID, segmentID string, f *Filter) (SegmentCount, error) {
	if err := audienceTenant(tenantID); err != nil {
		return SegmentCount{}, err
	}
	if (segmentID == "") == (f == nil) {
		var v apperr.Violations
		v.Add("target", "name a segment_id or give a filter")
		return SegmentCount{}, v.Err()
	}
	n := SegmentCount{Eligible: map[Channel]int{}}
	for _, ch := range Channels {
		n.Eligible[ch] = 0
	}
	count := func(page []Contact) error {
		n.Contacts += len(page)
		suppressed, err := a.suppressedIn(ctx, tenantID, page)
		if err != nil {
			return err
		}
		for i, c := range page {
			if suppressed[i] {
				continue
			}
			for _, ch := range Channels {
				if ok, _ := Eligible(c, ch); ok {
					n.Eligible[ch]++
				}
			}
		}
		return nil
	}
	var err error
	if segmentID != "" {
		err = a.EvaluateSegment(ctx, tenantID, segmentID, count)
	} else {
		err = a.EvaluateFilter(ctx, tenantID, *f, count)
	}
	if err != nil {
		return SegmentCount{}, err
	}
	return n, nil
}

// suppressedIn reports, per contact of page, whether the platform's suppression list holds it
// (all false without a list).
func (a *Audiences) suppressedIn(ctx context.Context, tenantID string, page []Contact) ([]bool, error) {
	out := make([]bool, len(page))
	if a.suppressions == nil {
		return out, nil
	}
	for i, c := range page {
		on, err := a.suppressions.SuppressedContact(ctx, tenantID, c)
		if err != nil {
			return nil, fmt.Errorf("check suppression list: %w", err)
		}
		out[i] = on
	}
	return out, nil
}
