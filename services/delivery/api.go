package delivery

import (
	"context"
	"strconv"
	"strings"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// ContactEtag is the opaque version of a contact that API clients send back to change it only
// if nobody changed it since: its revision, in the campaigns API's form.
func ContactEtag(c Contact) string { return "r" + strconv.FormatInt(c.Revision, 10) }

// ParseContactEtag returns the revision an etag names; "" is 0 (any revision). An etag this
// service never returned is an invalid argument, not a mismatch.
func ParseContactEtag(etag string) (int64, error) {
	if etag == "" {
		return 0, nil
	}
	rev, err := strconv.ParseInt(strings.TrimPrefix(etag, "r"), 10, 64)
	if !strings.HasPrefix(etag, "r") || err != nil || rev < 1 {
		var v apperr.Violations
		v.Add("contact.etag", "is not an etag this service returned")
		return 0, v.Err()
	}
	return rev, nil
}

// SegmentField is a field UpdateSegmentFields can change.
type SegmentField string

// The fields of a segment an update may name.
const (
	SegmentFieldName   SegmentField = "name"
	SegmentFieldFilter SegmentField = "filter"
)

// UpdateSegmentFields changes the fields of a segment of the tenant that mask names, keeping
// the others as stored. The fields kept are read before the write, so a concurrent change of
// a field not in the mask may be overwritten with the value read (segments have no revision
// yet). Audited.
func (a *Audiences) UpdateSegmentFields(ctx context.Context, tenantID string, in Segment, mask []SegmentField) (Segment, error) {
	var v apperr.Violations
	if len(mask) == 0 {
		v.Add("update_mask", "is required: name the fields to change")
	}
	var name, filter bool
	for _, f := range mask {
		switch f {
		case SegmentFieldName:
			name = true
		case SegmentFieldFilter:
			filter = true
		default:
			v.Add("update_mask", "unknown or read-only field %q", truncate(string(f), 80))
		}
	}
	if err := apperr.First(audienceTenant(tenantID), checkContactID("segment.id", in.ID), v.Err()); err != nil {
		return Segment{}, err
	}
	if !name || !filter {
		cur, err := a.GetSegment(ctx, tenantID, in.ID)
		if err != nil {
			return Segment{}, err
		}
		if !name {
			in.Name = cur.Name
		}
		if !filter {
			in.Filter = cur.Filter
		}
	}
	return a.UpdateSegment(ctx, tenantID, in)
}

// ListSegmentsPage returns one page of the tenant's segments by id and the next page's token
// ("" on the last page). pageSize 0 means DefaultPageSize; above MaxPageSize, MaxPageSize.
func (a *Audiences) ListSegmentsPage(ctx context.Context, tenantID string, pageSize int32, pageToken string) ([]Segment, string, error) {
	var v apperr.Violations
	size := int(pageSize)
	switch {
	case pageSize < 0:
		v.Add("page_size", "must not be negative")
	case pageSize == 0:
		size = DefaultPageSize
	case pageSize > MaxPageSize:
		size = MaxPageSize
	}
	if pageToken != "" && !uuidPattern.MatchString(pageToken) {
		v.Add("page_token", "is not a token this list returned")
	}
	if err := apperr.First(audienceTenant(tenantID), v.Err()); err != nil {
		return nil, "", err
	}
	ss, err := a.store.ListSegments(ctx, tenantID, pageToken, size+1)
	if err != nil || len(ss) <= size {
		return ss, "", err
	}
	ss = ss[:size]
	return ss, ss[size-1].ID, nil
}
