package campaigns

import (
	"errors"
	"strings"
	"testing"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// TestStateMachineEveryStateTimesEveryAction checks every (state, action) pair against a table
// written out in full here, independently of the implementation's table: "" means the action
// is illegal in that state.
func TestStateMachineEveryStateTimesEveryAction(t *testing.T) {
	t.Parallel()
	const x = State("")
	// Columns: schedule, activate, pause, resume, complete, cancel, archive,
	//          start, end, budget_exhausted, daily_reset, budget_available.
	actions := []Action{ActSchedule, ActActivate, ActPause, ActResume, ActComplete, ActCancel, ActArchive,
		ActStart, ActEnd, ActExhaust, ActDailyReset, ActReplenish}
	want := map[State][]State{
		Draft:           {Scheduled, x, x, x, x, x, Archived, x, x, x, x, x},
		Scheduled:       {x, Active, x, x, x, Cancelled, x, Active, x, x, x, x},
		Active:          {x, x, Paused, x, Completed, Cancelled, x, x, Completed, BudgetExhausted, x, x},
		Paused:          {x, x, x, Active, Completed, Cancelled, x, x, Completed, x, x, x},
		BudgetExhausted: {x, x, Paused, x, Completed, Cancelled, x, x, Completed, x, Active, Active},
		Completed:       {x, x, x, x, x, x, Archived, x, x, x, x, x},
		Cancelled:       {x, x, x, x, x, x, Archived, x, x, x, x, x},
		Archived:        {x, x, x, x, x, x, x, x, x, x, x, x},
	}
	if len(want) != len(States) || len(actions) != len(UserActions)+len(AutoActions) {
		t.Fatal("the expected table does not cover every state and action")
	}
	for _, from := range States {
		for i, a := range actions {
			t.Run(string(from)+"/"+string(a), func(t *testing.T) {
				got, err := Next(from, a)
				exp := want[from][i]
				if exp == x {
					var de *apperr.Error
					if !errors.As(err, &de) || de.Code != apperr.FailedPrecondition || de.Reason != "INVALID_STATE_TRANSITION" {
						t.Fatalf("Next(%s, %s) = %q, %v; want FAILED_PRECONDITION", from, a, got, err)
					}
					if !strings.Contains(de.Message, "it is "+string(from)) {
						t.Errorf("error %q does not name the current state %s", de.Message, from)
					}
					return
				}
				if err != nil || got != exp {
					t.Fatalf("Next(%s, %s) = %q, %v; want %s", from, a, got, err, exp)
				}
			})
		}
	}
}

func TestEveryFieldHasARowInTheChangeTable(t *testing.T) {
	t.Parallel()
	for _, f := range append(Fields, fieldVariantsWeights) {
		if _, ok := changeableIn[f]; !ok {
			t.Errorf("field %s has no row in the table of changeable fields", f)
		}
		if CanChange(f, Archived) {
			t.Errorf("%s is changeable in an archived campaign", f)
		}
		if !CanChange(f, Draft) {
			t.Errorf("%s is not changeable in a draft", f)
		}
	}
	if CanChange(FieldBudgetCurrency, Active) || !CanChange(FieldBudgetTotal, Active) || !CanChange(fieldVariantsWeights, Paused) || CanChange(FieldVariants, Paused) {
		t.Error("the budget and variant rows do not follow the documented table")
	}
}
