package delivery_test

import (
	"strings"
	"testing"

	"github.com/campaignmesh/campaignmesh/services/delivery"
)

func TestFilterValidate(t *testing.T) {
	ok := delivery.Filter{
		Attributes: []delivery.AttributeCondition{
			{Key: "plan", Op: delivery.AttrEquals, Values: []string{"pro"}},
			{Key: "city", Op: delivery.AttrIn, Values: []string{"Paris", "Lyon"}},
			{Key: "vip", Op: delivery.AttrExists},
			{Key: "zip", Op: delivery.AttrPrefix, Values: []string{"75"}},
		},
		ConsentGranted: []delivery.Channel{delivery.ChannelEmail},
		Behaviour:      &delivery.BehaviourCondition{EventType: "click", CampaignID: "0b8e9c7e-51a4-4b4e-9d0e-6f1f8a4c2d10", WithinDays: 30},
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid filter: %v", err)
	}
	many := make([]string, delivery.MaxInValues+1)
	for name, tc := range map[string]struct {
		f    delivery.Filter
		want string
	}{
		"key":              {delivery.Filter{Attributes: []delivery.AttributeCondition{{Key: "a'; DROP TABLE contacts; --", Op: delivery.AttrExists}}}, "filter.attributes[0].key"},
		"op":               {delivery.Filter{Attributes: []delivery.AttributeCondition{{Key: "a", Op: "like", Values: []string{"%"}}}}, "filter.attributes[0].op"},
		"equals two":       {delivery.Filter{Attributes: []delivery.AttributeCondition{{Key: "a", Op: delivery.AttrEquals, Values: []string{"x", "y"}}}}, "filter.attributes[0].values"},
		"exists value":     {delivery.Filter{Attributes: []delivery.AttributeCondition{{Key: "a", Op: delivery.AttrExists, Values: []string{"x"}}}}, "filter.attributes[0].values"},
		"in none":          {delivery.Filter{Attributes: []delivery.AttributeCondition{{Key: "a", Op: delivery.AttrIn}}}, "filter.attributes[0].values"},
		"in too many":      {delivery.Filter{Attributes: []delivery.AttributeCondition{{Key: "a", Op: delivery.AttrIn, Values: many}}}, "filter.attributes[0].values"},
		"value too long":   {delivery.Filter{Attributes: []delivery.AttributeCondition{{Key: "a", Op: delivery.AttrPrefix, Values: []string{strings.Repeat("x", 2000)}}}}, "filter.attributes[0].values"},
		"channel":          {delivery.Filter{ConsentGranted: []delivery.Channel{"fax"}}, "filter.consent_granted"},
		"behaviour days":   {delivery.Filter{Behaviour: &delivery.BehaviourCondition{EventType: "click", WithinDays: 0}}, "filter.behaviour.within_days"},
		"behaviour window": {delivery.Filter{Behaviour: &delivery.BehaviourCondition{EventType: "click", WithinDays: 400}}, "filter.behaviour.within_days"},
		"behaviour type":   {delivery.Filter{Behaviour: &delivery.BehaviourCondition{WithinDays: 3}}, "filter.behaviour.event_type"},
		"campaign id":      {delivery.Filter{Behaviour: &delivery.BehaviourCondition{EventType: "click", CampaignID: "x", WithinDays: 3}}, "filter.behaviour.campaign_id"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := violations(t, tc.f.Validate()); !contains(got, tc.want) {
				t.Errorf("violations %v, want %q", got, tc.want)
			}
		})
	}
	conds := make([]delivery.AttributeCondition, delivery.MaxConditions+1)
	for i := range conds {
		conds[i] = delivery.AttributeCondition{Key: "a", Op: delivery.AttrExists}
	}
	if got := violations(t, delivery.Filter{Attributes: conds}.Validate()); !contains(got, "filter.attributes") {
		t.Errorf("too many conditions: %v", got)
	}
}
