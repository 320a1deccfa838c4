package access

import (
	"testing"

	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
)

func TestRuleNamingANonMeshIdentityIsNoRule(t *testing.T) {
	callers := func(s ...string) *accessv1.Rule {
		return &accessv1.Rule{Requirement: &accessv1.Rule_Callers{Callers: &accessv1.Callers{Services: s}}}
	}
	for name, tc := range map[string]struct {
		rule *accessv1.Rule
		want bool
	}{
		"mesh identities":     {callers("ingest", "campaigns"), true},
		"a test identity":     {callers("ingest", "meshtest"), false},
		"an empty allow-list": {callers(), false},
		"no requirement":      {&accessv1.Rule{Audit: true}, false},
		"a permission":        {&accessv1.Rule{Requirement: &accessv1.Rule_Permission{Permission: "users.read"}}, true},
	} {
		if got := usable(tc.rule); got != tc.want {
			t.Errorf("%s: usable = %v, want %v", name, got, tc.want)
		}
	}
}
