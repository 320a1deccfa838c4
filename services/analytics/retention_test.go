package analytics_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/services/analytics"
)

// Tenants with the same retention share a rule (one clause of the run's mutation); tenants
// without one, or with 0 days, have none.
func TestRetentionRulesGroupTenantsByDays(t *testing.T) {
	now := time.Date(2026, 6, 15, 12, 30, 15, 500, time.UTC)
	got := analytics.Rules(map[string]privacy.Policy{
		"b": {RetentionDays: 30}, "a": {RetentionDays: 30}, "c": {RetentionDays: 7},
		"d": {RetentionDays: 0}, "e": {IP: privacy.IPTruncate},
	}, now)
	want := []analytics.RetentionRule{
		{Tenants: []string{"c"}, Before: time.Date(2026, 6, 8, 12, 30, 15, 0, time.UTC)},
		{Tenants: []string{"a", "b"}, Before: time.Date(2026, 5, 16, 12, 30, 15, 0, time.UTC)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	if rules := analytics.Rules(nil, now); len(rules) != 0 {
		t.Errorf("no policies: %v", rules)
	}
}
