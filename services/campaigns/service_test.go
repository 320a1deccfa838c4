package campaigns_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
)

// Every state-transition RPC from every state, through the service and the real store: legal
// ones change the state and record one transition; illegal ones answer FAILED_PRECONDITION
// naming the current state and change nothing.
func TestUserTransitionsFromEveryState(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	for _, from := range campaigns.States {
		for _, action := range campaigns.UserActions {
			t.Run(string(from)+"/"+string(action), func(t *testing.T) {
				c := e.inState(t, "t1", from)
				before := len(e.transitions(t, "t1", c.ID))
				want, legal := campaigns.Next(from, action)
				got, err := e.svc.Transition(ctx, manager("t1"), c.ID, action, c.Etag())
				after := e.transitions(t, "t1", c.ID)
				if legal != nil {
					if code(err) != apperr.FailedPrecondition || !strings.Contains(err.Error(), "it is "+string(from)) {
						t.Fatalf("illegal %s from %s: %v; want FAILED_PRECONDITION naming %s", action, from, err, from)
					}
					if now := e.get(t, "t1", c.ID); now.State != from || now.Revision != c.Revision || len(after) != before {
						t.Fatalf("an illegal transition changed the campaign: %+v", now)
					}
					return
				}
				if err != nil || got.State != want || got.Revision != c.Revision+1 {
					t.Fatalf("%s from %s = %s (rev %d), %v; want %s", action, from, got.State, got.Revision, err, want)
				}
				last := after[len(after)-1]
				if len(after) != before+1 || last.From != from || last.To != want || last.Actor != "manager-t1" || !strings.HasSuffix(last.Trigger, "Campaign") {
					t.Fatalf("transitions after %s: %+v", action, after)
				}
				if want != campaigns.BudgetExhausted && (got.Exhausted != "" || got.ResumeTime != nil) {
					t.Errorf("left budget exhaustion behind: %+v", got)
				}
			})
		}
	}
}

// fieldChanges change one field each, to a value that is valid in every state (the clock is
// before the schedule starts; a new end lies in the future).
var fieldChanges = map[campaigns.Field]func(c *campaigns.Campaign){
	campaigns.FieldName:           func(c *campaigns.Campaign) { c.Name = "Renamed" },
	campaigns.FieldDescription:    func(c *campaigns.Campaign) { c.Description = "new words" },
	campaigns.FieldChannel:        func(c *campaigns.Campaign) { c.Channel = campaigns.ChannelSMS },
	campaigns.FieldScheduleStart:  func(c *campaigns.Campaign) { c.Schedule.Start.Day = 9 },
	campaigns.FieldScheduleEnd:    func(c *campaigns.Campaign) { c.Schedule.End.Month = 12 },
	campaigns.FieldScheduleZone:   func(c *campaigns.Campaign) { c.Schedule.TimeZone = "America/Chicago" },
	campaigns.FieldBudgetTotal:    func(c *campaigns.Campaign) { c.Budget.TotalMicros *= 2 },
	campaigns.FieldBudgetDaily:    func(c *campaigns.Campaign) { c.Budget.DailyMicros++ },
	campaigns.FieldBudgetCurrency: func(c *campaigns.Campaign) { c.Budget.Currency = "EUR" },
	campaigns.FieldBudgetPacing:   func(c *campaigns.Campaign) { c.Budget.Pacing = campaigns.PacingASAP },
	campaigns.FieldGoal:           func(c *campaigns.Campaign) { c.Goal = "signup" },
	campaigns.FieldVariants:       func(c *campaigns.Campaign) { c.Variants = []campaigns.Variant{{Name: "only", Weight: 100}} },
	campaigns.FieldTags:           func(c *campaigns.Campaign) { c.Tags = []string{"new"} },
	campaigns.FieldLabels:         func(c *campaigns.Campaign) { c.Labels = map[string]string{"k": "v"} },
}

// The table of fields that may change in each state, as documented on the Campaign message
// (columns: draft, scheduled, active, paused, budget_exhausted, completed, cancelled, archived).
var changeTable = map[string]string{
	"name":                    "✓✓✓✓✓✓✓–",
	"description":             "✓✓✓✓✓✓✓–",
	"tags":                    "✓✓✓✓✓✓✓–",
	"labels":                  "✓✓✓✓✓✓✓–",
	"channel":                 "✓–––––––",
	"goal.conversion_event":   "✓✓––––––",
	"variants":                "✓✓––––––",
	"variants (weights only)": "✓✓✓✓✓–––",
	"schedule.start":          "✓✓––––––",
	"schedule.time_zone":      "✓✓––––––",
	"schedule.end":            "✓✓✓✓✓–––",
	"budget.currency_code":    "✓✓––––––",
	"budget.total_micros":     "✓✓✓✓✓–––",
	"budget.daily_micros":     "✓✓✓✓✓–––",
	"budget.pacing":           "✓✓✓✓✓–––",
}

func TestFieldChangesFollowTheStateTable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	changes := map[string]func(c *campaigns.Campaign){"variants (weights only)": func(c *campaigns.Campaign) {
		c.Variants = []campaigns.Variant{{Name: "a", Weight: 30}, {Name: "b", Weight: 70}}
	}}
	for f, change := range fieldChanges {
		changes[string(f)] = change
	}
	if len(changes) != len(changeTable) {
		t.Fatalf("%d changes for %d table rows", len(changes), len(changeTable))
	}
	for field, row := range changeTable {
		allowed := []rune(row)
		for i, state := range campaigns.States {
			t.Run(field+"/"+string(state), func(t *testing.T) {
				c := e.inState(t, "t1", state)
				in := c
				changes[field](&in)
				path := strings.TrimSuffix(field, " (weights only)")
				got, err := e.svc.UpdateCampaign(ctx, manager("t1"), in, []string{path}, c.Etag())
				if allowed[i] == '✓' {
					if err != nil || got.Revision != c.Revision+1 {
						t.Fatalf("changing %s of a %s campaign: %v", field, state, err)
					}
					return
				}
				if code(err) != apperr.FailedPrecondition || reason(err) != "FIELD_NOT_CHANGEABLE" || !strings.Contains(err.Error(), string(state)) {
					t.Fatalf("changing %s of a %s campaign: %v; want FIELD_NOT_CHANGEABLE naming the state", field, state, err)
				}
				// The same value is no change, so it passes even where the field is frozen.
				if _, err := e.svc.UpdateCampaign(ctx, manager("t1"), c, []string{path}, c.Etag()); err != nil {
					t.Fatalf("setting %s of a %s campaign to its own value: %v", field, state, err)
				}
			})
		}
	}
}

func TestUpdateValidatesTheResult(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	d := e.create(t, "t1", draft(t))
	active := e.inState(t, "t1", campaigns.Active)
	tests := []struct {
		name   string
		c      campaigns.Campaign
		change func(c *campaigns.Campaign)
		mask   []string
		want   apperr.Code
	}{
		{"no mask", d, func(*campaigns.Campaign) {}, nil, apperr.Invalid},
		{"unknown path", d, func(*campaigns.Campaign) {}, []string{"state"}, apperr.Invalid},
		{"weights not summing to 100", d, func(c *campaigns.Campaign) { c.Variants[0].Weight = 10 }, []string{"variants"}, apperr.Invalid},
		{"a draft may drop its budget", d, func(c *campaigns.Campaign) { c.Budget = campaigns.Budget{} }, []string{"budget"}, 0},
		{"a running campaign may not", active, func(c *campaigns.Campaign) { c.Budget.TotalMicros = 0 }, []string{"budget.total_micros"}, apperr.Invalid},
		{"end in the past once running", active, func(c *campaigns.Campaign) { c.Schedule.End = wall(t, "2026-02-01T00:00") }, []string{"schedule.end"}, apperr.Invalid},
		{"end before start", d, func(c *campaigns.Campaign) { c.Schedule.End = wall(t, "2026-03-08T08:00") }, []string{"schedule.end"}, apperr.Invalid},
		{"unknown zone", d, func(c *campaigns.Campaign) { c.Schedule.TimeZone = "Mars/Base" }, []string{"schedule"}, apperr.Invalid},
		{"whole resource", d, func(c *campaigns.Campaign) { c.Name = "All"; c.Tags = []string{"x"} }, []string{"*"}, 0},
		{"another tenant's campaign", d, func(c *campaigns.Campaign) { c.Name = "Mine now" }, []string{"name"}, apperr.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.c
			in.Variants = append([]campaigns.Variant(nil), tt.c.Variants...)
			tt.change(&in)
			tenant := "t1"
			if tt.want == apperr.NotFound {
				tenant = "t2"
			}
			_, err := e.svc.UpdateCampaign(ctx, manager(tenant), in, tt.mask, "")
			if code(err) != tt.want {
				t.Fatalf("update: %v, want code %v", err, tt.want)
			}
		})
	}
}

func TestEtagsGuardEveryChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	m := manager("t1")
	c := e.create(t, "t1", draft(t))
	stale := c.Etag()
	in := c
	in.Name = "First"
	first, err := e.svc.UpdateCampaign(ctx, m, in, []string{"name"}, stale)
	if err != nil || first.Etag() == stale {
		t.Fatalf("update with the current etag: %v (etag %q)", err, first.Etag())
	}
	in.Name = "Second"
	if _, err := e.svc.UpdateCampaign(ctx, m, in, []string{"name"}, stale); code(err) != apperr.Conflict || reason(err) != "ETAG_MISMATCH" {
		t.Fatalf("update with a stale etag: %v, want ABORTED", err)
	}
	if _, err := e.svc.Transition(ctx, m, c.ID, campaigns.ActSchedule, stale); code(err) != apperr.Conflict {
		t.Fatalf("transition with a stale etag: %v", err)
	}
	if err := e.svc.DeleteCampaign(ctx, m, c.ID, stale); code(err) != apperr.Conflict {
		t.Fatalf("delete with a stale etag: %v", err)
	}
	if got := e.get(t, "t1", c.ID); got.Name != "First" || got.State != campaigns.Draft {
		t.Fatalf("stale writes changed the campaign: %+v", got)
	}
	// Many writers with the same etag: exactly one wins, the others are told to re-read.
	var wins, conflicts atomic.Int64
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			in := first
			in.Name = fmt.Sprint("racer ", i)
			_, err := e.svc.UpdateCampaign(ctx, m, in, []string{"name"}, first.Etag())
			switch code(err) {
			case 0:
				wins.Add(1)
			case apperr.Conflict:
				conflicts.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 || conflicts.Load() != 7 {
		t.Fatalf("%d writers won and %d conflicted, want 1 and 7", wins.Load(), conflicts.Load())
	}
}

func TestOnlyDraftsAreDeleted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	for _, state := range campaigns.States {
		t.Run(string(state), func(t *testing.T) {
			c := e.inState(t, "t1", state)
			err := e.svc.DeleteCampaign(ctx, manager("t1"), c.ID, "")
			if state == campaigns.Draft {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if code(err) != apperr.FailedPrecondition || !strings.Contains(err.Error(), "archive") || !strings.Contains(err.Error(), string(state)) {
				t.Fatalf("deleting a %s campaign: %v; want FAILED_PRECONDITION suggesting archive", state, err)
			}
		})
	}
}

func TestScheduleNeedsACompleteCampaign(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tests := []struct {
		name   string
		change func(c *campaigns.Campaign)
		field  string
	}{
		{"no start", func(c *campaigns.Campaign) { c.Schedule.Start = campaigns.WallClock{} }, "campaign.schedule.start"},
		{"no schedule", func(c *campaigns.Campaign) { c.Schedule = campaigns.Schedule{} }, "campaign.schedule.start"},
		{"no budget", func(c *campaigns.Campaign) { c.Budget = campaigns.Budget{} }, "campaign.budget"},
		{"even pacing with nothing to spread over", func(c *campaigns.Campaign) {
			c.Budget.DailyMicros = 0
			c.Schedule.End = campaigns.WallClock{}
		}, "campaign.budget.pacing"},
		{"end has passed", func(c *campaigns.Campaign) {
			c.Schedule.Start = wall(t, "2026-01-01T00:00")
			c.Schedule.End = wall(t, "2026-02-01T00:00")
		}, "campaign.schedule.end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := draft(t)
			tt.change(&d)
			c := e.create(t, "t1", d)
			_, err := e.svc.Transition(ctx, manager("t1"), c.ID, campaigns.ActSchedule, "")
			var de *apperr.Error
			if !errors.As(err, &de) || de.Code != apperr.Invalid || len(de.Violations) == 0 || de.Violations[0].Field != tt.field {
				t.Fatalf("schedule: %v; want a violation of %s", err, tt.field)
			}
		})
	}
}

func TestCreateValidatesAndOwnsServerFields(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	d := draft(t)
	d.ID, d.State, d.Creator, d.Revision = "f00dfeed-0000-0000-0000-000000000000", campaigns.Active, "someone else", 99
	c, err := e.svc.CreateCampaign(ctx, manager("t1"), d)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID == d.ID || c.State != campaigns.Draft || c.Creator != "manager-t1" || c.Revision != 1 || c.TenantID != "t1" {
		t.Fatalf("server-owned fields taken from the request: %+v", c)
	}
	bad := []func(c *campaigns.Campaign){
		func(c *campaigns.Campaign) { c.Name = " " },
		func(c *campaigns.Campaign) { c.Name = strings.Repeat("x", 201) },
		func(c *campaigns.Campaign) { c.Channel = "fax" },
		func(c *campaigns.Campaign) { c.Budget.Currency = "usd" },
		func(c *campaigns.Campaign) { c.Budget.DailyMicros = c.Budget.TotalMicros + 1 },
		func(c *campaigns.Campaign) { c.Budget.TotalMicros = -1 },
		func(c *campaigns.Campaign) {
			c.Variants = []campaigns.Variant{{Name: "a", Weight: 50}, {Name: "a", Weight: 50}}
		},
		func(c *campaigns.Campaign) { c.Variants = []campaigns.Variant{{Name: "bad name", Weight: 100}} },
		func(c *campaigns.Campaign) { c.Tags = []string{"Upper"} },
		func(c *campaigns.Campaign) { c.Labels = map[string]string{"1x": "v"} },
		func(c *campaigns.Campaign) { c.Labels = map[string]string{"k": strings.Repeat("v", 257)} },
		func(c *campaigns.Campaign) { c.Schedule.TimeZone = "Local" },
		func(c *campaigns.Campaign) { c.Goal = strings.Repeat("g", 201) },
		func(c *campaigns.Campaign) { c.Description = "bell\a" },
	}
	for i, change := range bad {
		d := draft(t)
		change(&d)
		if _, err := e.svc.CreateCampaign(ctx, manager("t1"), d); code(err) != apperr.Invalid {
			t.Errorf("bad campaign %d: %v, want INVALID_ARGUMENT", i, err)
		}
	}
	if _, err := e.svc.CreateCampaign(ctx, nil, draft(t)); code(err) != apperr.PermissionDenied {
		t.Errorf("create without a tenant: %v", err)
	}
}
