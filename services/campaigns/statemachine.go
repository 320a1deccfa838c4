package campaigns

import (
	"slices"
	"strings"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// State is the lifecycle state of a campaign.
type State string

// The states. See the Campaign message in proto/campaignmesh/campaigns/v1/resources.proto for
// the diagram.
const (
	Draft           State = "draft"
	Scheduled       State = "scheduled"
	Active          State = "active"
	Paused          State = "paused"
	BudgetExhausted State = "budget_exhausted"
	Completed       State = "completed"
	Cancelled       State = "cancelled"
	Archived        State = "archived"
)

// States lists every state in lifecycle order.
var States = []State{Draft, Scheduled, Active, Paused, BudgetExhausted, Completed, Cancelled, Archived}

// Valid reports whether s is a known state.
func (s State) Valid() bool { return slices.Contains(States, s) }

// Action is what moves a campaign from one state to another: an RPC of a user, or an
// automatic step of the scheduler.
type Action string

// The actions users take, one RPC each.
const (
	ActSchedule Action = "schedule"
	ActActivate Action = "activate"
	ActPause    Action = "pause"
	ActResume   Action = "resume"
	ActComplete Action = "complete"
	ActCancel   Action = "cancel"
	ActArchive  Action = "archive"
)

// The actions of the scheduler.
const (
	// ActStart activates a scheduled campaign at its schedule start.
	ActStart Action = "start"
	// ActEnd completes a running campaign at its schedule end.
	ActEnd Action = "end"
	// ActExhaust stops a campaign whose total or daily budget is spent.
	ActExhaust Action = "budget_exhausted"
	// ActDailyReset resumes a campaign whose daily budget was spent, at the next midnight.
	ActDailyReset Action = "daily_reset"
	// ActReplenish resumes a budget-exhausted campaign whose budget was raised above its spend.
	ActReplenish Action = "budget_available"
)

// UserActions are the actions of the state-transition RPCs; AutoActions those of the scheduler.
var (
	UserActions = []Action{ActSchedule, ActActivate, ActPause, ActResume, ActComplete, ActCancel, ActArchive}
	AutoActions = []Action{ActStart, ActEnd, ActExhaust, ActDailyReset, ActReplenish}
)

type edge struct {
	from []State
	to   State
}

// transitions is the state machine: for each action, the states it applies to and the state
// it leads to. Nothing else is allowed.
var transitions = map[Action]edge{
	ActSchedule:   {[]State{Draft}, Scheduled},
	ActActivate:   {[]State{Scheduled}, Active},
	ActPause:      {[]State{Active, BudgetExhausted}, Paused},
	ActResume:     {[]State{Paused}, Active},
	ActComplete:   {[]State{Active, Paused, BudgetExhausted}, Completed},
	ActCancel:     {[]State{Scheduled, Active, Paused, BudgetExhausted}, Cancelled},
	ActArchive:    {[]State{Draft, Completed, Cancelled}, Archived},
	ActStart:      {[]State{Scheduled}, Active},
	ActEnd:        {[]State{Active, Paused, BudgetExhausted}, Completed},
	ActExhaust:    {[]State{Active}, BudgetExhausted},
	ActDailyReset: {[]State{BudgetExhausted}, Active},
	ActReplenish:  {[]State{BudgetExhausted}, Active},
}

// Next returns the state that action leads to from from, or a FAILED_PRECONDITION error that
// names the current state and the states the action needs.
func Next(from State, action Action) (State, error) {
	e, ok := transitions[action]
	if !ok {
		return "", apperr.New(apperr.Invalid, "UNKNOWN_ACTION", "unknown action %q", action)
	}
	if !slices.Contains(e.from, from) {
		return "", apperr.New(apperr.FailedPrecondition, "INVALID_STATE_TRANSITION",
			"cannot %s the campaign: it is %s; %s needs a campaign that is %s", action, from, action, joinStates(e.from))
	}
	return e.to, nil
}

func joinStates(ss []State) string {
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = string(s)
	}
	if len(names) == 1 {
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// Field is a part of a campaign that Update can change.
type Field string

// The updatable fields, as named in update_mask.
const (
	FieldName            Field = "name"
	FieldDescription     Field = "description"
	FieldChannel         Field = "channel"
	FieldScheduleStart   Field = "schedule.start"
	FieldScheduleEnd     Field = "schedule.end"
	FieldScheduleZone    Field = "schedule.time_zone"
	FieldBudgetTotal     Field = "budget.total_micros"
	FieldBudgetDaily     Field = "budget.daily_micros"
	FieldBudgetCurrency  Field = "budget.currency_code"
	FieldBudgetPacing    Field = "budget.pacing"
	FieldGoal            Field = "goal.conversion_event"
	FieldVariants        Field = "variants"
	FieldTags            Field = "tags"
	FieldLabels          Field = "labels"
	fieldVariantsWeights Field = "variants (weights only)"
)

// Fields lists every updatable field.
var Fields = []Field{FieldName, FieldDescription, FieldChannel, FieldScheduleStart, FieldScheduleEnd, FieldScheduleZone,
	FieldBudgetTotal, FieldBudgetDaily, FieldBudgetCurrency, FieldBudgetPacing, FieldGoal, FieldVariants, FieldTags, FieldLabels}

// maskGroups are the update_mask paths that stand for several fields.
var maskGroups = map[string][]Field{
	"schedule": {FieldScheduleStart, FieldScheduleEnd, FieldScheduleZone},
	"budget":   {FieldBudgetTotal, FieldBudgetDaily, FieldBudgetCurrency, FieldBudgetPacing},
	"goal":     {FieldGoal},
	"*":        Fields,
}

var (
	notArchived = []State{Draft, Scheduled, Active, Paused, BudgetExhausted, Completed, Cancelled}
	notStarted  = []State{Draft, Scheduled}
	notEnded    = []State{Draft, Scheduled, Active, Paused, BudgetExhausted}
)

// changeableIn is the table of which field may change in which state (documented on the
// Campaign message). A field set to its current value is not a change.
var changeableIn = map[Field][]State{
	FieldName:            notArchived,
	FieldDescription:     notArchived,
	FieldTags:            notArchived,
	FieldLabels:          notArchived,
	FieldChannel:         {Draft},
	FieldGoal:            notStarted,
	FieldVariants:        notStarted,
	fieldVariantsWeights: notEnded,
	FieldScheduleStart:   notStarted,
	FieldScheduleZone:    notStarted,
	FieldScheduleEnd:     notEnded,
	FieldBudgetCurrency:  notStarted,
	FieldBudgetTotal:     notEnded,
	FieldBudgetDaily:     notEnded,
	FieldBudgetPacing:    notEnded,
}

// CanChange reports whether field may change while a campaign is in state.
func CanChange(field Field, state State) bool { return slices.Contains(changeableIn[field], state) }
