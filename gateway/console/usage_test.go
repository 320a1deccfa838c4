package console

import (
	"bytes"
	"net/url"
	"strings"
	"testing"
	"time"

	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
)

func TestParseUsageQuery(t *testing.T) {
	now := time.Date(2026, 11, 29, 23, 30, 0, 0, time.FixedZone("UTC+2", 2*3600)) // 21:30 UTC
	for _, tc := range []struct {
		name, query, wantErr string
		want                 usageQuery
	}{
		{name: "no query: the month so far (UTC)", want: usageQuery{From: "2026-11-01", To: "2026-11-29"}},
		{name: "a range and a tenant", query: "from=2026-01-01&to=2026-12-31&tenant=0b6c2a4e-1111-4a8e-9e0e-3a9e2f7c0d11",
			want: usageQuery{From: "2026-01-01", To: "2026-12-31", Tenant: "0b6c2a4e-1111-4a8e-9e0e-3a9e2f7c0d11"}},
		{name: "one day", query: "from=2026-02-03&to=2026-02-03", want: usageQuery{From: "2026-02-03", To: "2026-02-03"}},
		{name: "a leap year's 366 days", query: "from=2028-01-01&to=2028-12-31", want: usageQuery{From: "2028-01-01", To: "2028-12-31"}},
		{name: "only from: to today", query: "from=2026-10-15", want: usageQuery{From: "2026-10-15", To: "2026-11-29"}},
		{name: "not a date", query: "from=yesterday", wantErr: "first day"},
		{name: "no such day", query: "from=2026-02-30", wantErr: "first day"},
		{name: "a time, not a day", query: "to=2026-11-02T10:00", wantErr: "last day"},
		{name: "to before from", query: "from=2026-11-02&to=2026-11-01", wantErr: "before the first"},
		{name: "367 days", query: "from=2026-01-01&to=2027-01-02", wantErr: "367 days"},
		{name: "a tenant that is no id", query: "tenant=<b>", wantErr: "organization"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseUsageQuery(q, now)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one about %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v %v, want %+v", got, err, tc.want)
			}
		})
	}
}

// The tables: only meters with a value, in the meters' order (an unknown one last), days oldest
// first with a dash where billing has no row, the API's totals as they are (a gauge's is its
// latest day).
func TestUsageTable(t *testing.T) {
	resp := &billingv1.GetUsageResponse{
		Usage: []*billingv1.Usage{
			{TenantId: "t1", Day: "2026-11-02", Meter: "events_accepted", Value: 5},
			{TenantId: "t1", Day: "2026-11-02", Meter: "contacts_stored", Value: 40},
			{TenantId: "t1", Day: "2026-11-01", Meter: "events_accepted", Value: 7},
			{TenantId: "t1", Day: "2026-11-01", Meter: "messages_sms", Value: 0},
			{TenantId: "t1", Day: "2026-11-01", Meter: "future_meter", Value: 1},
		},
		Totals: []*billingv1.UsageTotal{
			{TenantId: "t1", Meter: "events_accepted", Value: 12}, {TenantId: "t1", Meter: "contacts_stored", Value: 40},
			{TenantId: "t1", Meter: "messages_sms", Value: 0}, {TenantId: "t1", Meter: "future_meter", Value: 1},
		},
	}
	cols := usageColumns(resp)
	var names []string
	for _, c := range cols {
		names = append(names, c.Meter+"="+c.Label)
	}
	if got := strings.Join(names, ","); got != "events_accepted=Events accepted,contacts_stored=Contacts stored,future_meter=future_meter" {
		t.Fatalf("columns %s", got)
	}
	days, totals := usageTable(resp, cols)
	if len(days) != 2 || days[0].Day != "2026-11-01" || days[1].Day != "2026-11-02" {
		t.Fatalf("days %+v", days)
	}
	if c := days[0].Cells; c[0] != (usageCell{7, true}) || c[1].Set || c[2] != (usageCell{1, true}) {
		t.Errorf("first day %+v", c)
	}
	if c := days[1].Cells; c[0] != (usageCell{5, true}) || c[1] != (usageCell{40, true}) || c[2].Set {
		t.Errorf("second day %+v", c)
	}
	if totals[0] != (usageCell{12, true}) || totals[1] != (usageCell{40, true}) || totals[2] != (usageCell{1, true}) {
		t.Errorf("totals %+v", totals)
	}

	// Every tenant: one row each, named from the list, those without usage too, by name.
	q := usageQuery{From: "2026-11-01", To: "2026-11-02"}
	rows := usageByTenant([]*billingv1.UsageTotal{{TenantId: "b", Meter: "events_accepted", Value: 3}, {TenantId: "a", Meter: "events_accepted", Value: 9},
		{TenantId: "x", Meter: "events_accepted", Value: 1}}, cols[:1], []usageChoice{{ID: "a", Name: "Zeta (zeta)"}, {ID: "b", Name: "Alpha (alpha)"},
		{ID: "c", Name: "Idle (idle)"}}, q)
	var got []string
	for _, r := range rows {
		got = append(got, r.Name)
	}
	if strings.Join(got, ",") != "Alpha (alpha),Idle (idle),Zeta (zeta),x" {
		t.Fatalf("tenant rows %v", got)
	}
	if rows[0].Cells[0] != (usageCell{3, true}) || rows[1].Cells[0].Set || rows[0].Link != "/console/usage?tenant=b&from=2026-11-01&to=2026-11-02" {
		t.Errorf("rows %+v", rows)
	}
}

// The page escapes what the API returns (tenant names, plan names, meters).
func TestUsagePageEscapes(t *testing.T) {
	pages, err := parsePages()
	if err != nil {
		t.Fatal(err)
	}
	const evil = `<img src=x onerror=alert(1)>`
	q := usageQuery{From: "2026-11-01", To: "2026-11-02", Tenant: "a"}
	for name, d := range map[string]usageData{
		"one tenant": {Query: q, Operator: true, TenantName: evil, Tenants: []usageChoice{{ID: "a", Name: evil}},
			Columns: []usageColumn{{Meter: evil, Label: evil}}, Days: []usageDay{{Day: evil, Cells: []usageCell{{1, true}}}},
			Totals: []usageCell{{1, true}}, Plan: &usagePlan{Name: evil, Limits: []usageLimit{{Label: evil, Period: evil, Limit: 1, Used: 2, Over: true}}}},
		"every tenant": {Query: usageQuery{From: "2026-11-01", To: "2026-11-02"}, Operator: true, AllView: true,
			Columns: []usageColumn{{Meter: evil, Label: evil}}, AllTenants: []usageTenant{{ID: "a", Name: evil, Link: q.link(evil), Cells: []usageCell{{1, true}}}}},
	} {
		var b bytes.Buffer
		if err := pages["usage"].ExecuteTemplate(&b, "layout", view{Title: "Usage", Data: d}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if strings.Contains(b.String(), "<img") || !strings.Contains(b.String(), "&lt;img src=x onerror=alert(1)&gt;") {
			t.Errorf("%s: the value is not escaped as text:\n%s", name, b.String())
		}
	}
}
