package delivery

import (
	"context"
	"slices"
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

// Output-only paths of contacts and segments. Updates ignore them in update_mask (AIP-203): a
// REST PATCH infers the mask from the body, and the body carries the id and the etag.
var (
	contactOutputOnly = []string{"id", "suppressed", "suppression_reason", "create_time", "update_time", "etag"}
	segmentOutputOnly = []string{"id", "create_time", "update_time"}
)

// ParseContactMask turns update_mask paths into the fields UpdateContact changes: "*" is every
// one of them, a path inside attributes (as a REST PATCH infers it) is attributes (the map is
// replaced as a whole), output-only paths are ignored. Consent and suppression paths are
// refused: they change through SetContactConsent, which records the source.
func ParseContactMask(paths []string) ([]ContactField, error) {
	var out []ContactField
	for _, p := range paths {
		switch {
		case slices.Contains(contactOutputOnly, p):
			continue
		case p == "*":
			out = append(out, FieldEmail, FieldPhone, FieldUserID, FieldAttributes, FieldTimeZone, FieldLocale)
			continue
		case strings.HasPrefix(p, "attributes."):
			p = string(FieldAttributes)
		}
		out = append(out, ContactField(p))
	}
	return maskResult(paths, slices.Compact(sortedFields(out)))
}

// ParseSegmentMask turns update_mask paths into the fields UpdateSegmentFields changes: "*" is
// both, a path inside filter is filter (replaced as a whole), output-only paths are ignored.
func ParseSegmentMask(paths []string) ([]SegmentField, error) {
	var out []SegmentField
	for _, p := range paths {
		switch {
		case slices.Contains(segmentOutputOnly, p):
			continue
		case p == "*":
			out = append(out, SegmentFieldName, SegmentFieldFilter)
			continue
		case strings.HasPrefix(p, "filter."):
			p = string(SegmentFieldFilter)
		}
		out = append(out, SegmentField(p))
	}
	return maskResult(paths, slices.Compact(sortedFields(out)))
}

func sortedFields[F ~string](fs []F) []F { slices.Sort(fs); return fs }

// maskResult refuses a mask whose paths were all output-only; an empty mask is left to the
// update, which reports it as missing.
func maskResult[F ~string](paths []string, fields []F) ([]F, error) {
	if len(paths) > 0 && len(fields) == 0 {
		var v apperr.Violations
		v.Add("update_mask", "names no field that can be updated")
		return nil, v.Err()
	}
	return fields, nil
}
