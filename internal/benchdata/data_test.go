package benchdata

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestBigTenantNamesOnlyTheTenant: a data set for another big tenant id is the same data set
// under that id (bench-dsr loads it for a tenant of its auth service).
func TestBigTenantNamesOnlyTheTenant(t *testing.T) {
	end := time.Date(2026, 3, 30, 12, 0, 0, 0, time.UTC)
	cfg := Config{Seed: 1, Events: 40_000, Campaigns: 12, Days: 2, SmallTenants: 1}
	a := Plan(cfg, end)
	cfg.BigTenant = "3f1c2a9e-0000-4000-8000-000000000001"
	b := Plan(cfg, end)
	if a.Tenants[0].ID != BigTenant || b.Tenants[0].ID != cfg.BigTenant {
		t.Fatalf("big tenants %q and %q", a.Tenants[0].ID, b.Tenants[0].ID)
	}
	b.Tenants[0].ID = BigTenant
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the big tenant's id changed more than the id")
	}
	sql := Plan(cfg, end).InsertSQL(Plan(cfg, end).Tenants[0], 0, 10)
	if !strings.Contains(sql, "'"+cfg.BigTenant+"'") || strings.Contains(sql, BigTenant) {
		t.Fatal("the insert does not write the named tenant")
	}
}
