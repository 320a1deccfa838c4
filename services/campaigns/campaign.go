// Package campaigns is the domain of the campaigns service: campaigns and their lifecycle state
// machine, time-zone-aware schedules run by a durable scheduler, and budgets with pacing. It
// holds the business rules and validation; SQL lives in package postgres and gRPC in package
// grpcapi.
package campaigns

import (
	"context"
	"errors"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
)

// Channel is where a campaign runs.
type Channel string

// The channels.
const (
	ChannelEmail   Channel = "email"
	ChannelSMS     Channel = "sms"
	ChannelPush    Channel = "push"
	ChannelWeb     Channel = "web"
	ChannelDisplay Channel = "display"
	ChannelSocial  Channel = "social"
)

// Channels lists every channel.
var Channels = []Channel{ChannelEmail, ChannelSMS, ChannelPush, ChannelWeb, ChannelDisplay, ChannelSocial}

// Pacing is how spend is meant to spread over a day.
type Pacing string

// The pacings.
const (
	PacingASAP Pacing = "asap"
	PacingEven Pacing = "even"
)

// Exhaustion says which budget a budget-exhausted campaign has spent ("" when none).
type Exhaustion string

// The exhaustions.
const (
	ExhaustedTotal Exhaustion = "total"
	ExhaustedDaily Exhaustion = "daily"
)

// Schedule is when a campaign runs: wall-clock times in an IANA zone.
type Schedule struct {
	Start, End WallClock
	TimeZone   string
	// StartTime and EndTime are Start and End resolved in TimeZone (nil when unset). The
	// service keeps them in step; the store persists them for the scheduler's queries.
	StartTime, EndTime *time.Time
}

// resolve sets StartTime and EndTime from the wall-clock times; the zone must be valid.
func (s *Schedule) resolve() error {
	s.StartTime, s.EndTime = nil, nil
	if s.Start.IsZero() && s.End.IsZero() {
		return nil
	}
	loc, err := LoadZone(s.TimeZone)
	if err != nil {
		return err
	}
	if !s.Start.IsZero() {
		t := s.Start.In(loc)
		s.StartTime = &t
	}
	if !s.End.IsZero() {
		t := s.End.In(loc)
		s.EndTime = &t
	}
	return nil
}

// Budget is how much a campaign may spend, in micros of Currency.
type Budget struct {
	TotalMicros int64
	// DailyMicros is the budget per local day; 0 means none.
	DailyMicros int64
	Currency    string
	Pacing      Pacing
}

// IsZero reports whether no budget is set.
func (b Budget) IsZero() bool { return b == Budget{} || b == Budget{Pacing: PacingASAP} }

// Variant is one arm of an A/B test.
type Variant struct {
	Name   string
	Weight int
}

// Campaign is a tenant's campaign.
type Campaign struct {
	ID          string
	TenantID    string
	Name        string
	Description string
	Channel     Channel
	State       State
	Schedule    Schedule
	Budget      Budget
	// Goal is the name of the conversion event that counts.
	Goal     string
	Variants []Variant
	Tags     []string
	Labels   map[string]string
	Creator  string
	// Revision counts the changes; the etag is made of it.
	Revision   int64
	CreateTime time.Time
	UpdateTime time.Time
	StateTime  time.Time
	// Exhausted and ResumeTime are set in BudgetExhausted (ResumeTime for a daily budget).
	Exhausted  Exhaustion
	ResumeTime *time.Time
	// LaunchTime is when the campaign was scheduled (nil for drafts): its spend counts against
	// the total budget from then on.
	LaunchTime *time.Time
}

// spendSince is where the campaign's total spend starts: its launch, or its creation for a
// draft.
func (c Campaign) spendSince() time.Time {
	if c.LaunchTime != nil {
		return *c.LaunchTime
	}
	return c.CreateTime
}

// Etag is the opaque version of the campaign that clients send back.
func (c Campaign) Etag() string { return "r" + strconv.FormatInt(c.Revision, 10) }

// checkEtag compares a client's etag with the campaign's: empty always matches.
func (c Campaign) checkEtag(etag string) error {
	if etag == "" || etag == c.Etag() {
		return nil
	}
	return apperr.New(apperr.Conflict, "ETAG_MISMATCH", "campaign %s was changed since etag %q (now %q); read it again and retry", c.ID, etag, c.Etag())
}

// Transition is one change of a campaign's state.
type Transition struct {
	// ID, TenantID, CampaignID and RecordTime are set by the store.
	ID            string
	TenantID      string
	CampaignID    string
	From, To      State
	Trigger       string
	Actor         string
	EffectiveTime time.Time
	RecordTime    time.Time
	// Seq orders a campaign's transitions (store-assigned).
	Seq int64
}

// Store is what the domain needs from persistence. Every tenant-scoped call takes the tenant
// explicitly; a campaign of another tenant is reported as not found.
//
// Changes in audited work carry their audit record, which the domain takes (audit.Take) where
// it decides the change; the store writes it in the transaction of the change, so the record
// commits with the change or neither does. A nil record: the work is not audited.
type Store interface {
	// CreateCampaign stores a new campaign with rec, whose resource becomes the id the store
	// gives the campaign.
	CreateCampaign(ctx context.Context, c Campaign, rec *audit.Record) (Campaign, error)
	GetCampaign(ctx context.Context, tenantID, id string) (Campaign, error)
	ListCampaigns(ctx context.Context, tenantID string, q ListQuery) ([]Campaign, error)
	// UpdateCampaign locks the campaign, lets change modify it, and stores the result with the
	// next revision, together with the transition and the audit record change returns,
	// atomically. An error from change aborts and is returned as is (ErrUnchanged: nothing to
	// store).
	UpdateCampaign(ctx context.Context, tenantID, id string, change ChangeFunc) (Campaign, *Transition, error)
	// DeleteCampaign locks the campaign, asks check whether it may go, and deletes it with rec.
	DeleteCampaign(ctx context.Context, tenantID, id string, check func(Campaign) error, rec *audit.Record) error
	// ListTransitions returns a campaign's transitions with Seq > afterSeq, oldest first.
	ListTransitions(ctx context.Context, tenantID, campaignID string, afterSeq int64, limit int) ([]Transition, error)
	// ApplyDue claims up to limit campaigns of any tenant that are due for kind at now, oldest
	// due first, skipping those another scheduler holds, and applies change to each as
	// UpdateCampaign does — in one transaction. It returns what it stored.
	ApplyDue(ctx context.Context, kind DueKind, now time.Time, limit int, change ChangeFunc) ([]Applied, error)
	// CountDue counts the campaigns of any tenant due for any kind at now, held by a scheduler
	// or not.
	CountDue(ctx context.Context, now time.Time) (int, error)
	// BudgetCandidates lists campaigns of any tenant that are active or budget-exhausted and
	// have a budget, by id, after afterID ("" for the start).
	BudgetCandidates(ctx context.Context, afterID string, limit int) ([]Campaign, error)
	// DeliveryCampaigns returns up to q.Limit active campaigns on DeliveryChannels matching q,
	// by tenant and id.
	DeliveryCampaigns(ctx context.Context, q DeliveryQuery) ([]Campaign, error)
}

// ChangeFunc changes a locked campaign in place and returns the transition it made, if any,
// and the audit record of the change (nil: not audited). The record of a transition takes the
// transition's id, which the store assigns.
type ChangeFunc func(c *Campaign) (*Transition, *audit.Record, error)

// takeRecord takes the record of the audited work in ctx (audit.Take) for the store to write
// with the change; nil outside audited work.
func takeRecord(ctx context.Context, tenantID, resource string) *audit.Record {
	r, ok := audit.Take(ctx, tenantID, resource)
	if !ok {
		return nil
	}
	return &r
}

// Applied is a campaign the scheduler changed, and its transition.
type Applied struct {
	Campaign   Campaign
	Transition Transition
}

// DueKind names what the scheduler looks for.
type DueKind string

// The kinds of due work.
const (
	// DueStart: scheduled campaigns whose schedule start has come.
	DueStart DueKind = "start"
	// DueEnd: active, paused or budget-exhausted campaigns whose schedule end has come.
	DueEnd DueKind = "end"
	// DueResume: campaigns exhausted by their daily budget whose resume time has come.
	DueResume DueKind = "resume"
)

// ErrUnchanged tells the store that a ChangeFunc found nothing to change: it stores nothing
// and returns ErrUnchanged, which callers treat as "skip".
var ErrUnchanged = errors.New("campaign unchanged")

// Limits on input sizes.
const (
	MaxNameLen        = 200
	MaxDescriptionLen = 2000
	MaxGoalLen        = 200
	MaxVariants       = 20
	MaxTags           = 20
	MaxLabels         = 32
	MaxLabelValueLen  = 256
	MaxBudgetMicros   = 1_000_000_000_000_000
	DefaultPageSize   = 50
	MaxPageSize       = 1000
)

var (
	uuidPattern     = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	tagPattern      = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	labelKeyPattern = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,62}$`)
	variantPattern  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)
)

// ValidateID checks a campaign id.
func ValidateID(field, id string) error {
	var v apperr.Violations
	if !uuidPattern.MatchString(id) {
		v.Add(field, "must be a campaign id (UUID)")
	}
	return v.Err()
}

// normalize puts server-side forms on a campaign's user fields: tags sorted without
// duplicates, default pacing, no empty maps.
func (c *Campaign) normalize() {
	slices.Sort(c.Tags)
	c.Tags = slices.Compact(c.Tags)
	if c.Budget.Pacing == "" {
		c.Budget.Pacing = PacingASAP
	}
	if len(c.Labels) == 0 {
		c.Labels = nil
	}
	if len(c.Variants) == 0 {
		c.Variants = nil
	}
	if len(c.Tags) == 0 {
		c.Tags = nil
	}
}

// validate checks the fields users set, in any state (prefix: "campaign."), and resolves the
// schedule.
func (c *Campaign) validate() error {
	var v apperr.Violations
	checkText(&v, "campaign.name", c.Name, MaxNameLen, true)
	checkText(&v, "campaign.description", c.Description, MaxDescriptionLen, false)
	if !slices.Contains(Channels, c.Channel) {
		v.Add("campaign.channel", "must be one of %s", strings.Join(channelNames(), ", "))
	}
	c.validateSchedule(&v)
	c.validateBudget(&v)
	if c.Goal != "" {
		checkText(&v, "campaign.goal.conversion_event", c.Goal, MaxGoalLen, true)
	}
	checkVariants(&v, c.Variants)
	if len(c.Tags) > MaxTags {
		v.Add("campaign.tags", "at most %d tags", MaxTags)
	}
	for i, t := range c.Tags {
		if !tagPattern.MatchString(t) {
			v.Add("campaign.tags["+strconv.Itoa(i)+"]", "must be 1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit")
		}
	}
	if len(c.Labels) > MaxLabels {
		v.Add("campaign.labels", "at most %d labels", MaxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(c.Labels)) {
		if !labelKeyPattern.MatchString(k) {
			v.Add("campaign.labels", "key %q must be 1-63 characters of a-z, 0-9, '.', '_' and '-', starting with a letter", truncate(k, 70))
		}
		if val := c.Labels[k]; !utf8.ValidString(val) || utf8.RuneCountInString(val) > MaxLabelValueLen {
			v.Add("campaign.labels["+truncate(k, 70)+"]", "must be valid UTF-8 of at most %d characters", MaxLabelValueLen)
		}
	}
	return v.Err()
}

func (c *Campaign) validateSchedule(v *apperr.Violations) {
	s := &c.Schedule
	if s.Start.IsZero() && s.End.IsZero() && s.TimeZone == "" {
		s.StartTime, s.EndTime = nil, nil
		return
	}
	if _, err := LoadZone(s.TimeZone); err != nil {
		v.Add("campaign.schedule.time_zone", "must be an IANA time zone name such as Europe/Berlin or UTC")
		return
	}
	if !s.Start.IsZero() && !s.End.IsZero() && !s.Start.Before(s.End) {
		v.Add("campaign.schedule.end", "must be after schedule.start")
	}
	if err := s.resolve(); err != nil {
		v.Add("campaign.schedule.time_zone", "must be an IANA time zone name")
		return
	}
	if s.StartTime != nil && s.EndTime != nil && !s.EndTime.After(*s.StartTime) {
		// Distinct wall-clock times can meet inside a daylight-saving gap.
		v.Add("campaign.schedule.end", "resolves to an instant not after schedule.start in %s", s.TimeZone)
	}
}

func (c *Campaign) validateBudget(v *apperr.Violations) {
	b := c.Budget
	if b.IsZero() {
		return
	}
	if b.TotalMicros < 1 || b.TotalMicros > MaxBudgetMicros {
		v.Add("campaign.budget.total_micros", "must be 1 to %d", int64(MaxBudgetMicros))
	}
	if b.DailyMicros < 0 || b.DailyMicros > b.TotalMicros {
		v.Add("campaign.budget.daily_micros", "must be unset (0) or 1 to total_micros")
	}
	if !currencyPattern.MatchString(b.Currency) {
		v.Add("campaign.budget.currency_code", "must be an ISO 4217 code such as EUR")
	}
	if b.Pacing != PacingASAP && b.Pacing != PacingEven {
		v.Add("campaign.budget.pacing", "must be PACING_ASAP or PACING_EVEN")
	}
}

// validateReady checks what a campaign needs to be scheduled, and to stay schedulable
// afterwards.
func (c *Campaign) validateReady() error {
	var v apperr.Violations
	if c.Schedule.Start.IsZero() {
		v.Add("campaign.schedule.start", "is required to schedule the campaign")
	}
	if c.Schedule.TimeZone == "" {
		v.Add("campaign.schedule.time_zone", "is required to schedule the campaign")
	}
	if c.Budget.IsZero() {
		v.Add("campaign.budget", "is required to schedule the campaign")
	} else if c.Budget.Pacing == PacingEven && c.Budget.DailyMicros == 0 && c.Schedule.End.IsZero() {
		v.Add("campaign.budget.pacing", "PACING_EVEN needs a daily budget or a schedule end to spread the budget over")
	}
	return v.Err()
}

func checkVariants(v *apperr.Violations, vs []Variant) {
	if len(vs) == 0 {
		return
	}
	if len(vs) > MaxVariants {
		v.Add("campaign.variants", "at most %d variants", MaxVariants)
		return
	}
	sum := 0
	seen := map[string]bool{}
	for i, x := range vs {
		field := "campaign.variants[" + strconv.Itoa(i) + "]"
		if !variantPattern.MatchString(x.Name) {
			v.Add(field+".name", "must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit")
		} else if seen[x.Name] {
			v.Add(field+".name", "duplicate variant name %q", x.Name)
		}
		seen[x.Name] = true
		if x.Weight < 0 || x.Weight > 100 {
			v.Add(field+".weight", "must be 0 to 100")
		}
		sum += x.Weight
	}
	if sum != 100 {
		v.Add("campaign.variants", "weights must sum to 100, not %d", sum)
	}
}

func checkText(v *apperr.Violations, field, s string, maxLen int, required bool) {
	switch {
	case required && strings.TrimSpace(s) == "":
		v.Add(field, "is required")
	case !utf8.ValidString(s) || utf8.RuneCountInString(s) > maxLen:
		v.Add(field, "must be valid UTF-8 of at most %d characters", maxLen)
	case strings.ContainsFunc(s, func(r rune) bool { return r < ' ' && r != '\n' && r != '\t' }):
		v.Add(field, "must not contain control characters")
	}
}

func channelNames() []string {
	out := make([]string, len(Channels))
	for i, c := range Channels {
		out[i] = string(c)
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// variantNames returns the names of vs, in order.
func variantNames(vs []Variant) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.Name
	}
	return out
}
