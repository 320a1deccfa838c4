package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
)

// The usage page's limits and forms.
const (
	// usageDayLayout is the API's day (UTC), as the date inputs send it.
	usageDayLayout = "2006-01-02"
	// usageMaxDays is billing's bound on a range (inclusive days), checked here first so the
	// form's error names the field.
	usageMaxDays = 366
	// usageMaxTenants is how many tenants the operator's selector lists (ListTenants' largest
	// page); the all-tenants table shows every tenant with usage whatever this says.
	usageMaxTenants = 1000
)

// usageMeters are billing's meters in the order its reports show them, with the words the
// page uses. A meter billing adds later still shows, after these, under its own name.
var usageMeters = []struct{ Name, Label string }{
	{"events_accepted", "Events accepted"},
	{"events_stored", "Events stored"},
	{"messages_email", "Emails sent"},
	{"messages_sms", "SMS sent"},
	{"contacts_stored", "Contacts stored"},
	{"analytics_queries", "Analytics queries"},
	{"storage_bytes", "Data stored (bytes)"},
}

// usageLabel is a meter's column heading.
func usageLabel(meter string) string {
	for _, m := range usageMeters {
		if m.Name == meter {
			return m.Label
		}
	}
	return meter
}

// usageQuery is the usage page's query: the days as entered and, for an operator, the tenant.
type usageQuery struct {
	From, To string
	Tenant   string
}

// parseUsageQuery reads the page's query. Without from, the range starts on the first day of
// the current UTC month; without to, it ends today (UTC).
func parseUsageQuery(q url.Values, now time.Time) (usageQuery, error) {
	now = now.UTC()
	u := usageQuery{From: strings.TrimSpace(q.Get("from")), To: strings.TrimSpace(q.Get("to")), Tenant: strings.TrimSpace(q.Get("tenant"))}
	if u.From == "" {
		u.From = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).Format(usageDayLayout)
	}
	if u.To == "" {
		u.To = now.Format(usageDayLayout)
	}
	if u.Tenant != "" && !validID(u.Tenant) {
		return u, errors.New("the organization is not valid")
	}
	start, err := parseUsageDay(u.From)
	if err != nil {
		return u, fmt.Errorf("the first day: %w", err)
	}
	end, err := parseUsageDay(u.To)
	if err != nil {
		return u, fmt.Errorf("the last day: %w", err)
	}
	if end.Before(start) {
		return u, errors.New("the last day is before the first day")
	}
	if days := int(end.Sub(start)/(24*time.Hour)) + 1; days > usageMaxDays {
		return u, fmt.Errorf("the range is %d days; at most %d", days, usageMaxDays)
	}
	return u, nil
}

func parseUsageDay(s string) (time.Time, error) {
	if len(s) == len(usageDayLayout) {
		if t, err := time.ParseInLocation(usageDayLayout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("write it as 2026-01-31 (UTC)")
}

// link is the page's address for the query with another tenant (empty: every tenant).
func (u usageQuery) link(tenant string) string {
	return Prefix + "usage" + queryString("tenant", tenant, "from", u.From, "to", u.To)
}

// usageColumn is a meter of the tables.
type usageColumn struct{ Meter, Label string }

// usageCell is one number of a table; Set is false where billing has no row.
type usageCell struct {
	Value int64
	Set   bool
}

// usageDay is one day of the tenant's table, a cell per column.
type usageDay struct {
	Day   string
	Cells []usageCell
}

// usageTenant is one tenant of the operator's all-tenants table.
type usageTenant struct {
	ID, Name, Link string
	Cells          []usageCell
}

// usageLimit is one limit of the plan with what the tenant used in its current period.
type usageLimit struct {
	Label, Period string
	Limit, Used   int64
	Hard          bool
	// Over: used past the limit; Reached: used exactly the limit (a hard one refuses more).
	Over, Reached bool
}

// usagePlan is the tenant's plan as the page shows it.
type usagePlan struct {
	Name     string
	Revision int64
	Limits   []usageLimit
}

// usageChoice is a tenant of the operator's selector.
type usageChoice struct{ ID, Name string }

// usageData is the usage page.
type usageData struct {
	Query    usageQuery
	Operator bool
	Tenants  []usageChoice
	// TenantName names the tenant shown (operator with a tenant chosen).
	TenantName string
	// Columns are the meters with any value in the range, in the meters' order.
	Columns []usageColumn
	// Days and Totals are one tenant's table; AllTenants the operator's table of every tenant.
	Days       []usageDay
	Totals     []usageCell
	AllTenants []usageTenant
	// AllView is the operator's every-tenant view (AllTenants, even when empty).
	AllView bool
	Plan    *usagePlan
}

func (c *Console) usageRoutes(m *http.ServeMux) {
	m.HandleFunc("GET "+Prefix+"usage", c.signedIn(c.usagePage))
}

// usagePage shows the metered usage of a day range and the plan's limits: a tenant's users
// their own tenant, a platform operator a chosen tenant or every tenant's totals. Billing
// decides what the caller may read; the console only asks.
func (c *Console) usagePage(rq *request) {
	if !rq.need("usage.read") {
		return
	}
	if c.api.Billing == nil {
		rq.fail(errNoService)
		return
	}
	q, err := parseUsageQuery(rq.r.URL.Query(), rq.now())
	if err != nil {
		rq.renderError(http.StatusBadRequest, "Please check the dates: "+err.Error()+".")
		return
	}
	d := usageData{Query: q, Operator: rq.who.GetTenantId() == ""}
	if d.Operator && rq.can("tenants.manage") {
		ts, err := c.api.Auth.ListTenants(rq.ctx, &authv1.ListTenantsRequest{PageSize: usageMaxTenants})
		if err != nil {
			rq.fail(err)
			return
		}
		for _, t := range ts.GetTenants() {
			d.Tenants = append(d.Tenants, usageChoice{ID: t.GetId(), Name: t.GetDisplayName() + " (" + t.GetSlug() + ")"})
		}
	}
	resp, err := c.api.Billing.GetUsage(rq.ctx, &billingv1.GetUsageRequest{TenantId: q.Tenant, StartDay: q.From, EndDay: q.To})
	if err != nil {
		rq.fail(err)
		return
	}
	if d.Operator && q.Tenant == "" {
		d.AllView = true
		d.Columns = usageColumns(resp)
		d.AllTenants = usageByTenant(resp.GetTotals(), d.Columns, d.Tenants, q)
		rq.render("usage", "Usage", d)
		return
	}
	for _, t := range d.Tenants {
		if t.ID == q.Tenant {
			d.TenantName = t.Name
		}
	}
	if d.Operator && d.TenantName == "" {
		d.TenantName = q.Tenant
	}
	d.Columns = usageColumns(resp)
	d.Days, d.Totals = usageTable(resp, d.Columns)
	plan, err := c.api.Billing.GetPlan(rq.ctx, &billingv1.GetPlanRequest{TenantId: q.Tenant})
	if err != nil {
		rq.fail(err)
		return
	}
	if d.Plan, err = c.usagePlan(rq, q, resp, plan); err != nil {
		rq.fail(err)
		return
	}
	rq.render("usage", "Usage", d)
}

// usagePlan puts each of the plan's limits next to what the tenant used in its current
// period: today (UTC) for a daily limit, the month so far for a monthly one (a gauge's month
// is its latest day, as billing totals it). The month comes from shown when the range is
// exactly the month so far, else from one more GetUsage.
func (c *Console) usagePlan(rq *request, q usageQuery, shown *billingv1.GetUsageResponse, plan *billingv1.Plan) (*usagePlan, error) {
	p := &usagePlan{Name: plan.GetName(), Revision: plan.GetRevision()}
	if len(plan.GetLimits()) == 0 {
		return p, nil
	}
	now := rq.now().UTC()
	today := now.Format(usageDayLayout)
	monthStart := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).Format(usageDayLayout)
	month := shown
	if q.From != monthStart || q.To != today {
		var err error
		if month, err = c.api.Billing.GetUsage(rq.ctx, &billingv1.GetUsageRequest{TenantId: q.Tenant, StartDay: monthStart, EndDay: today}); err != nil {
			return nil, err
		}
	}
	for _, l := range plan.GetLimits() {
		var used int64
		switch l.GetPeriod() {
		case "day":
			for _, u := range month.GetUsage() {
				if u.GetDay() == today && u.GetMeter() == l.GetMeter() {
					used = u.GetValue()
				}
			}
		default: // month
			for _, t := range month.GetTotals() {
				if t.GetMeter() == l.GetMeter() {
					used = t.GetValue()
				}
			}
		}
		p.Limits = append(p.Limits, usageLimit{Label: usageLabel(l.GetMeter()), Period: l.GetPeriod(), Limit: l.GetLimit(), Used: used,
			Hard: l.GetHard(), Over: used > l.GetLimit(), Reached: used == l.GetLimit()})
	}
	return p, nil
}

// usageColumns are the meters with a value other than zero on any day or in any total, the
// known ones in their order, then any other by name.
func usageColumns(resp *billingv1.GetUsageResponse) []usageColumn {
	seen := map[string]bool{}
	for _, u := range resp.GetUsage() {
		if u.GetValue() != 0 {
			seen[u.GetMeter()] = true
		}
	}
	for _, t := range resp.GetTotals() {
		if t.GetValue() != 0 {
			seen[t.GetMeter()] = true
		}
	}
	var cols []usageColumn
	for _, m := range usageMeters {
		if seen[m.Name] {
			cols = append(cols, usageColumn{Meter: m.Name, Label: m.Label})
			delete(seen, m.Name)
		}
	}
	var rest []string
	for m := range seen {
		rest = append(rest, m)
	}
	slices.Sort(rest)
	for _, m := range rest {
		cols = append(cols, usageColumn{Meter: m, Label: m})
	}
	return cols
}

// usageTable lays one tenant's rows out by day (oldest first) and column, with the totals.
func usageTable(resp *billingv1.GetUsageResponse, cols []usageColumn) ([]usageDay, []usageCell) {
	col := usageIndex(cols)
	byDay := map[string][]usageCell{}
	var days []string
	for _, u := range resp.GetUsage() {
		i, ok := col[u.GetMeter()]
		if !ok {
			continue
		}
		cells, ok := byDay[u.GetDay()]
		if !ok {
			cells = make([]usageCell, len(cols))
			days = append(days, u.GetDay())
		}
		cells[i] = usageCell{Value: u.GetValue(), Set: true}
		byDay[u.GetDay()] = cells
	}
	slices.Sort(days)
	out := make([]usageDay, 0, len(days))
	for _, day := range days {
		out = append(out, usageDay{Day: day, Cells: byDay[day]})
	}
	totals := make([]usageCell, len(cols))
	for _, t := range resp.GetTotals() {
		if i, ok := col[t.GetMeter()]; ok {
			totals[i] = usageCell{Value: t.GetValue(), Set: true}
		}
	}
	return out, totals
}

// usageByTenant is the operator's table: one row per tenant, those with usage and those of the
// selector's list, named from that list (the id when the tenant is not in it), by name.
func usageByTenant(totals []*billingv1.UsageTotal, cols []usageColumn, tenants []usageChoice, q usageQuery) []usageTenant {
	col := usageIndex(cols)
	names := map[string]string{}
	for _, t := range tenants {
		names[t.ID] = t.Name
	}
	rows := map[string]*usageTenant{}
	var order []*usageTenant
	for _, t := range totals {
		r, ok := rows[t.GetTenantId()]
		if !ok {
			r = &usageTenant{ID: t.GetTenantId(), Name: names[t.GetTenantId()], Link: q.link(t.GetTenantId()), Cells: make([]usageCell, len(cols))}
			if r.Name == "" {
				r.Name = t.GetTenantId()
			}
			rows[t.GetTenantId()] = r
			order = append(order, r)
		}
		if i, ok := col[t.GetMeter()]; ok {
			r.Cells[i] = usageCell{Value: t.GetValue(), Set: true}
		}
	}
	for _, t := range tenants { // the tenants without usage in the range, with empty cells
		if _, ok := rows[t.ID]; !ok {
			r := &usageTenant{ID: t.ID, Name: t.Name, Link: q.link(t.ID), Cells: make([]usageCell, len(cols))}
			rows[t.ID] = r
			order = append(order, r)
		}
	}
	slices.SortFunc(order, func(a, b *usageTenant) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	out := make([]usageTenant, 0, len(order))
	for _, r := range order {
		out = append(out, *r)
	}
	return out
}

// usageIndex maps a meter to its column.
func usageIndex(cols []usageColumn) map[string]int {
	col := make(map[string]int, len(cols))
	for i, c := range cols {
		col[c.Meter] = i
	}
	return col
}
