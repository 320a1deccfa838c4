package main

import (
	"time"

	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
)

// usagePermissionDetails says who may read usage and plans.
const usagePermissionDetails = `Needs the usage.read permission (roles admin, manager and platform_operator). A tenant's
user sees its own tenant; a platform operator names one with -tenant or sees every tenant.`

var usageCommands = []*command{
	{
		name:    "get",
		summary: "show the usage per day and meter, with totals",
		details: `-from and -to are UTC days (YYYY-MM-DD), inclusive, at most 366 days apart. -meter takes a
comma list of: events_accepted, events_stored, messages_email, messages_sms, contacts_stored,
analytics_queries, storage_bytes. A day is recomputed until it closes (48 h after its end);
CLOSED says its value is final. Totals sum the days, except for the gauges contacts_stored
and storage_bytes, whose total is the latest day's value.

` + usagePermissionDetails,
		run: runUsageGet,
	},
}

var planCommands = []*command{
	{name: "get", summary: "show a tenant's plan: its limits per meter", details: usagePermissionDetails, run: runPlanGet},
	{
		name:    "set",
		summary: "set a tenant's plan (platform operators)",
		details: `Replaces the tenant's limits with those given: -limit METER:LIMIT:PERIOD[:hard], repeatable,
PERIOD day or month (UTC). Hard limits refuse what goes past them (only on events_accepted,
messages_email and messages_sms); the others warn. No -limit leaves the tenant without limits.
With -etag the plan changes only if it is unchanged since (its etag from cmesh plan get).

Needs the billing.manage permission (role platform_operator). Audited.`,
		run: runPlanSet,
	},
}

func runUsageGet(ctx context.Context, a *app, c *cmdline) error {
	var from, to, tenant, meters string
	c.StringVar(&from, "from", "", "first UTC `day`, YYYY-MM-DD (default: today)")
	c.StringVar(&to, "to", "", "last UTC `day`, YYYY-MM-DD, inclusive (default: -from)")
	c.StringVar(&tenant, "tenant", "", "the tenant `id` (platform operators; default: every tenant)")
	c.StringVar(&meters, "meter", "", "only these `meters` (comma list)")
	if _, err := c.parse(a); err != nil {
		return err
	}
	if from == "" {
		from = time.Now().UTC().Format(time.DateOnly)
	}
	if to == "" {
		to = from
	}
	req := &billingv1.GetUsageRequest{TenantId: tenant, StartDay: from, EndDay: to, Meters: splitList(meters)}
	return callService(ctx, a, billingv1.NewBillingServiceClient, writeUsage,
		func(ctx context.Context, client billingv1.BillingServiceClient) (*billingv1.GetUsageResponse, error) {
			return client.GetUsage(ctx, req)
		})
}

func runPlanGet(ctx context.Context, a *app, c *cmdline) error {
	var tenant string
	c.StringVar(&tenant, "tenant", "", "the tenant `id` (required for platform operators)")
	if _, err := c.parse(a); err != nil {
		return err
	}
	return callService(ctx, a, billingv1.NewBillingServiceClient, writePlan,
		func(ctx context.Context, client billingv1.BillingServiceClient) (*billingv1.Plan, error) {
			return client.GetPlan(ctx, &billingv1.GetPlanRequest{TenantId: tenant})
		})
}

func runPlanSet(ctx context.Context, a *app, c *cmdline) error {
	var (
		tenant, name, etag string
		limits             stringsFlag
	)
	c.StringVar(&tenant, "tenant", "", "the tenant `id` (required)")
	c.StringVar(&name, "name", "", "the plan's `name`")
	c.StringVar(&etag, "etag", "", "change only if the plan still has this `etag`")
	c.Var(&limits, "limit", "a `METER:LIMIT:PERIOD[:hard]` limit (repeatable)")
	if _, err := c.parse(a); err != nil {
		return err
	}
	if tenant == "" {
		return c.usageErr("-tenant is required")
	}
	plan := &billingv1.Plan{TenantId: tenant, Name: name, Etag: etag}
	for _, s := range limits {
		l, err := parseLimit(s)
		if err != nil {
			return c.usageErr(err.Error())
		}
		plan.Limits = append(plan.Limits, l)
	}
	return callService(ctx, a, billingv1.NewBillingServiceClient, writePlan,
		func(ctx context.Context, client billingv1.BillingServiceClient) (*billingv1.Plan, error) {
			return client.SetPlan(ctx, &billingv1.SetPlanRequest{Plan: plan})
		})
}

// parseLimit reads METER:LIMIT:PERIOD[:hard|:soft]; the server checks the meter and period.
func parseLimit(s string) (*billingv1.PlanLimit, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 3 || len(parts) > 4 {
		return nil, fmt.Errorf("-limit %q: want METER:LIMIT:PERIOD[:hard]", s)
	}
	n, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("-limit %q: the limit must be a whole number, 0 or more", s)
	}
	l := &billingv1.PlanLimit{Meter: parts[0], Limit: n, Period: parts[2]}
	if len(parts) == 4 {
		switch parts[3] {
		case "hard":
			l.Hard = true
		case "soft":
		default:
			return nil, fmt.Errorf("-limit %q: the last part must be hard or soft", s)
		}
	}
	return l, nil
}

func writeUsage(w io.Writer, r *billingv1.GetUsageResponse) error {
	t := newTable(w, "TENANT", "DAY", "METER", "VALUE", "CLOSED")
	for _, u := range r.GetUsage() {
		closed := "no"
		if u.GetClosed() {
			closed = "yes"
		}
		t.row(u.GetTenantId(), u.GetDay(), u.GetMeter(), strconv.FormatInt(u.GetValue(), 10), closed)
	}
	for _, x := range r.GetTotals() {
		t.row(x.GetTenantId(), "TOTAL", x.GetMeter(), strconv.FormatInt(x.GetValue(), 10), "")
	}
	return t.flush()
}

func writePlan(w io.Writer, p *billingv1.Plan) error {
	t := newTable(w)
	t.row("TENANT", p.GetTenantId())
	t.row("NAME", orDash(p.GetName()))
	t.row("ETAG", orDash(p.GetEtag()))
	updated := formatTimestamp(p.GetUpdateTime())
	if p.GetUpdatedBy() != "" {
		updated += " by " + p.GetUpdatedBy()
	}
	t.row("UPDATED", updated)
	if err := t.flush(); err != nil {
		return err
	}
	if len(p.GetLimits()) == 0 {
		_, err := fmt.Fprintln(w, "no limits")
		return err
	}
	lt := newTable(w, "METER", "LIMIT", "PERIOD", "KIND")
	for _, l := range p.GetLimits() {
		kind := "soft"
		if l.GetHard() {
			kind = "hard"
		}
		lt.row(l.GetMeter(), strconv.FormatInt(l.GetLimit(), 10), l.GetPeriod(), kind)
	}
	return lt.flush()
}
