package delivery

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// AttributeOp is how an attribute condition compares.
type AttributeOp string

// The attribute comparisons. Values compare as exact strings.
const (
	AttrEquals AttributeOp = "equals"
	AttrIn     AttributeOp = "in"
	AttrExists AttributeOp = "exists"
	AttrPrefix AttributeOp = "prefix"
)

// AttributeCondition selects contacts by one attribute.
type AttributeCondition struct {
	Key string
	Op  AttributeOp
	// Values: one for equals and prefix, 1-MaxInValues for in, none for exists.
	Values []string
}

// BehaviourCondition selects contacts whose user id did an event of a type for a campaign within
// the last WithinDays days (e.g. "clicked campaign X in the last 30 days"). Analytics knows;
// delivery asks it through BehaviourSource.
type BehaviourCondition struct {
	EventType  string
	CampaignID string
	WithinDays int
}

// Filter is a segment's definition: every condition must hold (AND).
type Filter struct {
	Attributes []AttributeCondition
	// ConsentGranted lists channels the contact must have granted consent on.
	ConsentGranted []Channel
	Behaviour      *BehaviourCondition
}

// Limits of a filter.
const (
	MaxConditions     = 20
	MaxInValues       = 100
	MaxBehaviourDays  = 365
	MaxEventTypeLen   = 64
	MaxSegmentNameLen = 200
)

// Validate checks f and reports every violation at once.
func (f Filter) Validate() error {
	var v apperr.Violations
	if len(f.Attributes) > MaxConditions {
		v.Add("filter.attributes", "at most %d conditions", MaxConditions)
	}
	for i, c := range f.Attributes {
		field := fmt.Sprintf("filter.attributes[%d]", i)
		if !attrKey.MatchString(c.Key) {
			v.Add(field+".key", "must be an attribute key: lowercase letters, digits and '_'")
		}
		want := "one value"
		ok := len(c.Values) == 1
		switch c.Op {
		case AttrEquals, AttrPrefix:
		case AttrIn:
			want, ok = fmt.Sprintf("1-%d values", MaxInValues), len(c.Values) >= 1 && len(c.Values) <= MaxInValues
		case AttrExists:
			want, ok = "no values", len(c.Values) == 0
		default:
			v.Add(field+".op", "must be equals, in, exists or prefix")
			continue
		}
		if !ok {
			v.Add(field+".values", "%s takes %s", c.Op, want)
		}
		for _, val := range c.Values {
			if len(val) > MaxAttrValueLen || !printableText(val) {
				v.Add(field+".values", "each at most %d bytes of printable text", MaxAttrValueLen)
				break
			}
		}
	}
	for _, ch := range f.ConsentGranted {
		if !ch.Valid() {
			v.Add("filter.consent_granted", "must be email or sms")
		}
	}
	if b := f.Behaviour; b != nil {
		if b.EventType == "" || len(b.EventType) > MaxEventTypeLen || !printableText(b.EventType) {
			v.Add("filter.behaviour.event_type", "must be 1-%d printable characters", MaxEventTypeLen)
		}
		if b.CampaignID != "" && !uuidPattern.MatchString(b.CampaignID) {
			v.Add("filter.behaviour.campaign_id", "must be a campaign id (UUID) or empty for any campaign")
		}
		if b.WithinDays < 1 || b.WithinDays > MaxBehaviourDays {
			v.Add("filter.behaviour.within_days", "must be 1-%d", MaxBehaviourDays)
		}
	}
	return v.Err()
}

// Segment is a tenant's saved filter, evaluated when a campaign sends, so it always reflects
// the contacts and behaviour of that moment.
type Segment struct {
	ID         string
	TenantID   string
	Name       string
	Filter     Filter
	CreateTime time.Time
	UpdateTime time.Time
}

// BehaviourQuery asks which users did an event of a type (for a campaign, when CampaignID is
// set) at or after Since.
type BehaviourQuery struct {
	EventType  string
	CampaignID string
	Since      time.Time
}

// MaxBehaviourCandidates is the most user ids one BehaviourSource call is given.
const MaxBehaviourCandidates = 1000

// BehaviourSource is the port to the tenant's behaviour (analytics implements it over its
// events). Contacts are first narrowed by their attributes in the database; the source is then
// asked only about those candidates, a page at a time.
type BehaviourSource interface {
	// MatchingUsers returns the user ids among userIDs (at most MaxBehaviourCandidates) that
	// match q in the tenant.
	MatchingUsers(ctx context.Context, tenantID string, q BehaviourQuery, userIDs []string) ([]string, error)
}

func validateSegment(s *Segment) error {
	var v apperr.Violations
	s.Name = strings.TrimSpace(s.Name)
	if s.Name == "" || len(s.Name) > MaxSegmentNameLen || !printableText(s.Name) {
		v.Add("name", "must be 1-%d printable characters", MaxSegmentNameLen)
	}
	return apperr.First(v.Err(), s.Filter.Validate())
}

// CreateSegment saves a segment in the tenant. Audited.
func (a *Audiences) CreateSegment(ctx context.Context, tenantID string, s Segment) (Segment, error) {
	if err := apperr.First(audienceTenant(tenantID), validateSegment(&s)); err != nil {
		return Segment{}, err
	}
	s.ID, s.TenantID = "", tenantID
	return a.store.CreateSegment(ctx, s, takeAudienceRecord(ctx, tenantID, ""))
}

// UpdateSegment replaces the name and filter of a segment of the tenant (s.ID). Campaigns
// that send to it later use the new filter. Audited.
func (a *Audiences) UpdateSegment(ctx context.Context, tenantID string, s Segment) (Segment, error) {
	if err := apperr.First(audienceTenant(tenantID), checkContactID("segment.id", s.ID), validateSegment(&s)); err != nil {
		return Segment{}, err
	}
	s.TenantID = tenantID
	return a.store.UpdateSegment(ctx, s, takeAudienceRecord(ctx, tenantID, s.ID))
}

// GetSegment returns a segment of the tenant.
func (a *Audiences) GetSegment(ctx context.Context, tenantID, id string) (Segment, error) {
	if err := apperr.First(audienceTenant(tenantID), checkContactID("id", id)); err != nil {
		return Segment{}, err
	}
	return a.store.GetSegment(ctx, tenantID, id)
}

// ListSegments returns up to limit segments of the tenant by id, after afterID.
func (a *Audiences) ListSegments(ctx context.Context, tenantID, afterID string, limit int) ([]Segment, error) {
	if afterID != "" {
		if err := checkContactID("page_token", afterID); err != nil {
			return nil, err
		}
	}
	if limit <= 0 || limit > MaxPageSize {
		limit = DefaultPageSize
	}
	if err := audienceTenant(tenantID); err != nil {
		return nil, err
	}
	return a.store.ListSegments(ctx, tenantID, afterID, limit)
}

// DeleteSegment deletes a segment of the tenant. Audited.
func (a *Audiences) DeleteSegment(ctx context.Context, tenantID, id string) error {
	if err := apperr.First(audienceTenant(tenantID), checkContactID("id", id)); err != nil {
		return err
	}
	return a.store.DeleteSegment(ctx, tenantID, id, takeAudienceRecord(ctx, tenantID, id))
}

// EvaluationPageSize is how many contacts one step of an evaluation reads from the database.
const EvaluationPageSize = 1000

var errNoBehaviour = apperr.New(apperr.Unavailable, "BEHAVIOUR_UNAVAILABLE", "behaviour conditions cannot be evaluated now")

// EvaluateSegment calls fn with the members of a segment of the tenant, a page at a time (each
// at most EvaluationPageSize contacts, in id order), as they are now. Membership says nothing
// about eligibility: the sender still calls Eligible for each. An error from fn stops the
// evaluation and is returned.
func (a *Audiences) EvaluateSegment(ctx context.Context, tenantID, id string, fn func([]Contact) error) error {
	s, err := a.GetSegment(ctx, tenantID, id)
	if err != nil {
		return err
	}
	return a.EvaluateFilter(ctx, tenantID, s.Filter, fn)
}

// EvaluateFilter calls fn with the contacts of the tenant matching f, a page at a time. The
// attribute and consent conditions run in the database; the behaviour condition, if any, is
// then asked of the BehaviourSource for the page's candidates that have a user id (a contact
// without one has no behaviour, so it never matches).
func (a *Audiences) EvaluateFilter(ctx context.Context, tenantID string, f Filter, fn func([]Contact) error) error {
	if err := apperr.First(audienceTenant(tenantID), f.Validate()); err != nil {
		return err
	}
	var q BehaviourQuery
	if b := f.Behaviour; b != nil {
		if a.behaviour == nil {
			return errNoBehaviour
		}
		q = BehaviourQuery{EventType: b.EventType, CampaignID: b.CampaignID, Since: a.now().UTC().AddDate(0, 0, -b.WithinDays)}
	}
	after := ""
	for {
		page, err := a.store.FilterContacts(ctx, tenantID, f, after, EvaluationPageSize)
		if err != nil {
			return fmt.Errorf("evaluate segment: %w", err)
		}
		if len(page) == 0 {
			return nil
		}
		after = page[len(page)-1].ID
		members := page
		if f.Behaviour != nil {
			if members, err = a.withBehaviour(ctx, tenantID, q, page); err != nil {
				return err
			}
		}
		if len(members) > 0 {
			if err := fn(members); err != nil {
				return err
			}
		}
		if len(page) < EvaluationPageSize {
			return nil
		}
	}
}

// withBehaviour keeps the contacts of page whose user id the behaviour source matches.
func (a *Audiences) withBehaviour(ctx context.Context, tenantID string, q BehaviourQuery, page []Contact) ([]Contact, error) {
	// A contact's events carry its app user id (events the tenant's apps send) or its contact
	// id (delivery's own: sends, opens, clicks), so both are asked about.
	ids := make([]string, 0, 2*len(page))
	for _, c := range page {
		ids = append(ids, c.ID)
		if c.UserID != "" {
			ids = append(ids, c.UserID)
		}
	}
	matched := map[string]bool{}
	for start := 0; start < len(ids); start += MaxBehaviourCandidates {
		chunk := ids[start:min(start+MaxBehaviourCandidates, len(ids))]
		got, err := a.behaviour.MatchingUsers(ctx, tenantID, q, chunk)
		if err != nil {
			return nil, fmt.Errorf("ask behaviour source: %w", err)
		}
		for _, id := range got {
			matched[id] = true
		}
	}
	out := page[:0:0]
	for _, c := range page {
		if matched[c.ID] || (c.UserID != "" && matched[c.UserID]) {
			out = append(out, c)
		}
	}
	return out, nil
}
