package campaigns

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
)

// Service implements the campaign use cases on top of a Store.
type Service struct {
	store  Store
	spend  SpendSource
	now    func() time.Time
	logger *slog.Logger
}

// NewService returns the campaigns service. spend may be nil: pacing then answers
// UNAVAILABLE.
func NewService(store Store, spend SpendSource) *Service {
	return &Service{store: store, spend: spend, now: time.Now, logger: slog.Default()}
}

// WithClock replaces the clock (tests).
func (s *Service) WithClock(now func() time.Time) *Service { s.now = now; return s }

// WithLogger sets where failures of the spend source are logged (callers only see
// UNAVAILABLE).
func (s *Service) WithLogger(l *slog.Logger) *Service { s.logger = l; return s }

var errNoTenant = apperr.New(apperr.PermissionDenied, "TENANT_REQUIRED", "campaigns belong to a tenant; this credential has none")

// tenantOf is the caller's tenant: campaigns exist only within one.
func tenantOf(caller *authn.Principal) (string, error) {
	if caller == nil || caller.TenantID == "" {
		return "", errNoTenant
	}
	return caller.TenantID, nil
}

// CreateCampaign creates a draft in the caller's tenant. Server-owned fields come from the
// server, whatever the request said.
func (s *Service) CreateCampaign(ctx context.Context, caller *authn.Principal, c Campaign) (Campaign, error) {
	tenant, err := tenantOf(caller)
	if err != nil {
		return Campaign{}, err
	}
	c.normalize()
	if err := c.validate(); err != nil {
		return Campaign{}, err
	}
	c.ID, c.TenantID, c.State, c.Creator, c.Revision = "", tenant, Draft, caller.Subject, 1
	c.StateTime, c.Exhausted, c.ResumeTime, c.LaunchTime = s.now(), "", nil, nil
	return s.store.CreateCampaign(ctx, c, takeRecord(ctx, tenant, ""))
}

// GetCampaign returns a campaign of the caller's tenant.
func (s *Service) GetCampaign(ctx context.Context, caller *authn.Principal, id string) (Campaign, error) {
	tenant, err := tenantOf(caller)
	if err != nil {
		return Campaign{}, err
	}
	if err := ValidateID("id", id); err != nil {
		return Campaign{}, err
	}
	return s.store.GetCampaign(ctx, tenant, id)
}

// ListCampaigns returns one page of the caller's tenant's campaigns and the next page's token.
func (s *Service) ListCampaigns(ctx context.Context, caller *authn.Principal, r ListRequest) ([]Campaign, string, error) {
	tenant, err := tenantOf(caller)
	if err != nil {
		return nil, "", err
	}
	q, err := ParseListRequest(r)
	if err != nil {
		return nil, "", err
	}
	cs, err := s.store.ListCampaigns(ctx, tenant, q)
	if err != nil {
		return nil, "", err
	}
	return cs, q.nextPageToken(cs), nil
}

// outputOnly are the paths of server-owned fields. Update ignores them in update_mask (AIP-203):
// a REST PATCH infers the mask from the body, and the body carries the etag.
var outputOnly = []string{"id", "state", "creator", "create_time", "update_time", "etag", "state_time",
	"exhausted_budget", "resume_time", "schedule.start_time", "schedule.end_time"}

// ParseMask turns update_mask paths into fields. Group paths ("schedule", "budget", "goal",
// "*") stand for all their fields; paths of output-only fields are ignored.
func ParseMask(paths []string) ([]Field, error) {
	var v apperr.Violations
	var out []Field
	if len(paths) == 0 {
		v.Add("update_mask", "is required: name the fields to change")
	}
	for _, p := range paths {
		if slices.Contains(outputOnly, p) {
			continue
		}
		if g, ok := maskGroups[p]; ok {
			out = append(out, g...)
			continue
		}
		if !slices.Contains(Fields, Field(p)) {
			v.Add("update_mask", "unknown or read-only field %q", truncate(p, 80))
			continue
		}
		out = append(out, Field(p))
	}
	if len(paths) > 0 && len(out) == 0 && len(v) == 0 {
		v.Add("update_mask", "names no field that can be updated")
	}
	slices.Sort(out)
	return slices.Compact(out), v.Err()
}

// UpdateCampaign changes the fields of a campaign of the caller's tenant that mask names,
// taking their values from in. etag, when set, must be the campaign's. The state table
// decides which fields may change now.
func (s *Service) UpdateCampaign(ctx context.Context, caller *authn.Principal, in Campaign, mask []string, etag string) (Campaign, error) {
	tenant, err := tenantOf(caller)
	if err != nil {
		return Campaign{}, err
	}
	audit.Annotate(ctx, "", "", in.ID)
	fields, err := ParseMask(mask)
	if err = apperr.First(ValidateID("campaign.id", in.ID), err); err != nil {
		return Campaign{}, err
	}
	in.normalize()
	now := s.now()
	c, _, err := s.store.UpdateCampaign(ctx, tenant, in.ID, func(cur *Campaign) (*Transition, *audit.Record, error) {
		if err := cur.checkEtag(etag); err != nil {
			return nil, nil, err
		}
		next, changed := applyFields(*cur, in, fields)
		for _, f := range changed {
			if !CanChange(f, cur.State) {
				return nil, nil, apperr.New(apperr.FailedPrecondition, "FIELD_NOT_CHANGEABLE",
					"%s cannot change while the campaign is %s", strings.TrimSuffix(string(f), " (weights only)"), cur.State)
			}
		}
		if err := next.validate(); err != nil {
			return nil, nil, err
		}
		if next.State != Draft {
			if err := next.validateReady(); err != nil {
				return nil, nil, err
			}
		}
		if slices.Contains(changed, FieldScheduleEnd) && next.State != Draft && next.Schedule.EndTime != nil && !next.Schedule.EndTime.After(now) {
			var v apperr.Violations
			v.Add("campaign.schedule.end", "must be in the future once the campaign is %s", next.State)
			return nil, nil, v.Err()
		}
		*cur = next
		return nil, takeRecord(ctx, tenant, cur.ID), nil
	})
	return c, err
}

// applyFields copies fields from in to cur and reports which of them actually changed. A
// change of variant weights alone is reported as fieldVariantsWeights.
func applyFields(cur, in Campaign, fields []Field) (Campaign, []Field) {
	next := cur
	var changed []Field
	note := func(f Field, same bool) {
		if !same {
			changed = append(changed, f)
		}
	}
	for _, f := range fields {
		switch f {
		case FieldName:
			next.Name = in.Name
			note(f, cur.Name == in.Name)
		case FieldDescription:
			next.Description = in.Description
			note(f, cur.Description == in.Description)
		case FieldChannel:
			next.Channel = in.Channel
			note(f, cur.Channel == in.Channel)
		case FieldScheduleStart:
			next.Schedule.Start = in.Schedule.Start
			note(f, cur.Schedule.Start == in.Schedule.Start)
		case FieldScheduleEnd:
			next.Schedule.End = in.Schedule.End
			note(f, cur.Schedule.End == in.Schedule.End)
		case FieldScheduleZone:
			next.Schedule.TimeZone = in.Schedule.TimeZone
			note(f, cur.Schedule.TimeZone == in.Schedule.TimeZone)
		case FieldBudgetTotal:
			next.Budget.TotalMicros = in.Budget.TotalMicros
			note(f, cur.Budget.TotalMicros == in.Budget.TotalMicros)
		case FieldBudgetDaily:
			next.Budget.DailyMicros = in.Budget.DailyMicros
			note(f, cur.Budget.DailyMicros == in.Budget.DailyMicros)
		case FieldBudgetCurrency:
			next.Budget.Currency = in.Budget.Currency
			note(f, cur.Budget.Currency == in.Budget.Currency)
		case FieldBudgetPacing:
			next.Budget.Pacing = in.Budget.Pacing
			note(f, cur.Budget.Pacing == in.Budget.Pacing)
		case FieldGoal:
			next.Goal = in.Goal
			note(f, cur.Goal == in.Goal)
		case FieldVariants:
			next.Variants = slices.Clone(in.Variants)
			switch {
			case slices.Equal(cur.Variants, in.Variants):
			case slices.Equal(variantNames(cur.Variants), variantNames(in.Variants)):
				changed = append(changed, fieldVariantsWeights)
			default:
				changed = append(changed, FieldVariants)
			}
		case FieldTags:
			next.Tags = slices.Clone(in.Tags)
			note(f, slices.Equal(cur.Tags, in.Tags))
		case FieldLabels:
			next.Labels = maps.Clone(in.Labels)
			note(f, maps.Equal(cur.Labels, in.Labels))
		}
	}
	next.normalize()
	return next, changed
}

// DeleteCampaign deletes a draft of the caller's tenant.
func (s *Service) DeleteCampaign(ctx context.Context, caller *authn.Principal, id, etag string) error {
	tenant, err := tenantOf(caller)
	if err != nil {
		return err
	}
	if err := ValidateID("id", id); err != nil {
		return err
	}
	// The record is taken before the check: a refused delete fails the call, which the access
	// layer then records itself.
	return s.store.DeleteCampaign(ctx, tenant, id, func(c Campaign) error {
		if err := c.checkEtag(etag); err != nil {
			return err
		}
		switch c.State {
		case Draft:
			return nil
		case Completed, Cancelled:
			return apperr.New(apperr.FailedPrecondition, "DELETE_NOT_DRAFT", "only drafts can be deleted; the campaign is %s: archive it instead", c.State)
		case Archived:
			return apperr.New(apperr.FailedPrecondition, "DELETE_NOT_DRAFT", "only drafts can be deleted; the campaign is archived already")
		default:
			return apperr.New(apperr.FailedPrecondition, "DELETE_NOT_DRAFT", "only drafts can be deleted; the campaign is %s: cancel or complete it, then archive it", c.State)
		}
	}, takeRecord(ctx, tenant, id))
}

// triggers are the transition triggers of the user actions: the RPC names.
var triggers = map[Action]string{
	ActSchedule: "ScheduleCampaign", ActActivate: "ActivateCampaign", ActPause: "PauseCampaign",
	ActResume: "ResumeCampaign", ActComplete: "CompleteCampaign", ActCancel: "CancelCampaign", ActArchive: "ArchiveCampaign",
}

// Transition applies a user action to a campaign of the caller's tenant.
func (s *Service) Transition(ctx context.Context, caller *authn.Principal, id string, action Action, etag string) (Campaign, error) {
	tenant, err := tenantOf(caller)
	if err != nil {
		return Campaign{}, err
	}
	trigger, ok := triggers[action]
	if !ok {
		return Campaign{}, apperr.New(apperr.Invalid, "UNKNOWN_ACTION", "unknown action %q", action)
	}
	if err := ValidateID("id", id); err != nil {
		return Campaign{}, err
	}
	now := s.now()
	c, _, err := s.store.UpdateCampaign(ctx, tenant, id, func(cur *Campaign) (*Transition, *audit.Record, error) {
		if err := cur.checkEtag(etag); err != nil {
			return nil, nil, err
		}
		to, err := Next(cur.State, action)
		if err != nil {
			return nil, nil, err
		}
		if action == ActSchedule {
			if err := cur.validateReady(); err != nil {
				return nil, nil, err
			}
			if cur.Schedule.EndTime != nil && !cur.Schedule.EndTime.After(now) {
				var v apperr.Violations
				v.Add("campaign.schedule.end", "has passed; set a later end to schedule the campaign")
				return nil, nil, v.Err()
			}
			cur.LaunchTime = &now
		}
		return cur.enter(to, trigger, caller.Subject, now), takeRecord(ctx, tenant, cur.ID), nil
	})
	return c, err
}

// enter moves c to state to and returns the transition. Leaving BudgetExhausted clears why
// it was there.
func (c *Campaign) enter(to State, trigger, actor string, at time.Time) *Transition {
	t := &Transition{From: c.State, To: to, Trigger: trigger, Actor: actor, EffectiveTime: at}
	c.State, c.StateTime = to, at
	if to != BudgetExhausted {
		c.Exhausted, c.ResumeTime = "", nil
	}
	return t
}

// ListTransitions returns one page of a campaign's transitions, oldest first.
func (s *Service) ListTransitions(ctx context.Context, caller *authn.Principal, id string, size int32, token string) ([]Transition, string, error) {
	tenant, err := tenantOf(caller)
	if err != nil {
		return nil, "", err
	}
	var v apperr.Violations
	if ValidateID("id", id) != nil {
		v.Add("id", "must be a campaign id (UUID)")
	}
	limit := int(size)
	switch {
	case size < 0:
		v.Add("page_size", "must not be negative")
	case size == 0:
		limit = DefaultPageSize
	case size > MaxPageSize:
		limit = MaxPageSize
	}
	after, err := parseSeqToken(token)
	if err != nil {
		v.Add("page_token", "is not a token from a previous page")
	}
	if err := v.Err(); err != nil {
		return nil, "", err
	}
	if _, err := s.store.GetCampaign(ctx, tenant, id); err != nil {
		return nil, "", err // another tenant's campaign: NOT_FOUND, not an empty list
	}
	ts, err := s.store.ListTransitions(ctx, tenant, id, after, limit)
	if err != nil || len(ts) < limit {
		return ts, "", err
	}
	return ts, seqToken(ts[len(ts)-1].Seq), nil
}

var errNoSpend = apperr.New(apperr.Unavailable, "SPEND_UNAVAILABLE", "campaign spend is not available right now; retry later")

// Pacing reports a campaign's spend against its budgets now.
func (s *Service) Pacing(ctx context.Context, caller *authn.Principal, id string) (PacingReport, error) {
	c, err := s.GetCampaign(ctx, caller, id)
	if err != nil {
		return PacingReport{}, err
	}
	if c.Budget.IsZero() {
		return PacingReport{}, apperr.New(apperr.FailedPrecondition, "NO_BUDGET", "the campaign has no budget")
	}
	if s.spend == nil {
		return PacingReport{}, errNoSpend
	}
	now := s.now()
	dayStart, _ := dayWindow(c, now)
	total, today, err := s.spendOf(ctx, c, now, dayStart)
	if err != nil {
		return PacingReport{}, err
	}
	return ComputePacing(c, now, total, today), nil
}

// spendOf asks the spend source for one campaign's spend since its creation and since
// dayStart.
func (s *Service) spendOf(ctx context.Context, c Campaign, now, dayStart time.Time) (total, today int64, err error) {
	from, end := totalWindow(c, now)
	all, err := s.spend.Spend(ctx, c.TenantID, []string{c.ID}, from, end)
	if err != nil {
		s.logger.WarnContext(ctx, "read campaign spend", "campaign_id", c.ID, "err", err.Error())
		return 0, 0, errNoSpend
	}
	day, err := s.spend.Spend(ctx, c.TenantID, []string{c.ID}, dayStart, end)
	if err != nil {
		s.logger.WarnContext(ctx, "read campaign spend", "campaign_id", c.ID, "err", err.Error())
		return 0, 0, errNoSpend
	}
	return spendIn(all, c.ID, c.Budget.Currency), spendIn(day, c.ID, c.Budget.Currency), nil
}
