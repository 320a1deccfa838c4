package clickhouse_test

import (
	"context"
	"slices"
	"testing"

	"github.com/campaignmesh/campaignmesh/services/analytics"
)

// MatchBehaviour answers which of the asked user ids did an event of a type (name, campaign)
// in the range, each once, within the tenant only.
func TestMatchBehaviour(t *testing.T) {
	t.Parallel()
	svc := load(t, append(dataset,
		ev{"t1", "e11", "click", "tap", "u1", "", "c2", "", "2026-03-28T11:00:00Z", 0, "", ""},
		ev{"t1", "e12", "click", "tap", "u1", "", "c1", "a", "2026-03-28T11:00:00Z", 0, "", ""}, // u1 clicked c1 twice
	), 1)
	ctx := context.Background()
	all := []string{"u1", "u2", "u4", "u5", "nobody", "u1"}
	for _, c := range []struct {
		name string
		req  analytics.BehaviourRequest
		want []string
	}{
		{"clicked anything", analytics.BehaviourRequest{EventType: "click"}, []string{"u1", "u2"}},
		{"clicked c2", analytics.BehaviourRequest{EventType: "click", CampaignID: "c2"}, []string{"u1"}},
		{"clicked, named tap, c1", analytics.BehaviourRequest{EventType: "click", EventName: "tap", CampaignID: "c1"}, []string{"u1", "u2"}},
		{"converted", analytics.BehaviourRequest{EventType: "conversion"}, []string{"u1", "u5"}},
		{"clicked before u2 did", analytics.BehaviourRequest{EventType: "click", End: ts("2026-03-28T12:00:00Z")}, []string{"u1"}},
		{"only the asked ids", analytics.BehaviourRequest{EventType: "click", UserIDs: []string{"u2"}}, []string{"u2"}},
		{"another tenant's u1", analytics.BehaviourRequest{TenantID: "t2", EventType: "impression"}, []string{"u1"}},
		{"another tenant has no click", analytics.BehaviourRequest{TenantID: "t2", EventType: "click"}, nil},
	} {
		req := c.req
		if req.TenantID == "" {
			req.TenantID = "t1"
		}
		if req.UserIDs == nil {
			req.UserIDs = all
		}
		req.Start = ts("2026-03-27T00:00:00Z")
		if !req.End.Given {
			req.End = ts("2026-03-31T00:00:00Z")
		}
		got, err := svc.MatchBehaviour(ctx, req)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: %v %v, want %v", c.name, got, err, c.want)
		}
	}
	bad := []analytics.BehaviourRequest{
		{TenantID: "t1", EventType: "click", UserIDs: []string{"u1"}},                                                                     // no start
		{TenantID: "t1", EventType: "", Start: ts("2026-03-27T00:00:00Z"), UserIDs: []string{"u1"}},                                       // no type
		{TenantID: "", EventType: "click", Start: ts("2026-03-27T00:00:00Z"), UserIDs: []string{"u1"}},                                    // no tenant
		{TenantID: "t1", EventType: "click", Start: ts("2026-03-27T00:00:00Z")},                                                           // no users
		{TenantID: "t1", EventType: "click", Start: ts("2020-03-27T00:00:00Z"), End: ts("2026-03-27T00:00:00Z"), UserIDs: []string{"u1"}}, // too long
	}
	for i, req := range bad {
		if _, err := svc.MatchBehaviour(ctx, req); err == nil {
			t.Errorf("bad request %d accepted", i)
		}
	}
}
