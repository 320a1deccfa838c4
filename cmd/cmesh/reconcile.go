package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
)

// usageReconcileCommand is `cmesh usage reconcile`.
var usageReconcileCommand = &command{
	name:    "reconcile",
	summary: "compare usage with what Stripe acknowledged and holds, per tenant, meter and day",
	details: `Reconciles one day (-day, default yesterday UTC) or the days -from..-to (inclusive, at
most 92), for one tenant (-tenant) or all. Each row shows our usage (OURS), what Stripe
acknowledged to the reporter (REPORTED), what Stripe's meter event summaries hold (STRIPE;
"-" without a Stripe customer), OURS - STRIPE, and why they differ: match, pending (not yet
acknowledged, or Stripe still aggregating), too_old (older than Stripe's 35 days: never
sent), no_customer, rejected (Stripe refused the report), decreased_after_report,
stripe_more, stripe_less.

-stored lists the reconciliations the daily job stored instead of asking Stripe now.
-differences keeps the rows that are not "match".

Needs the billing.manage permission (platform operators).`,
	run: runUsageReconcile,
}

func runUsageReconcile(ctx context.Context, a *app, c *cmdline) error {
	var day, from, to, tenant string
	var stored, differences bool
	c.StringVar(&day, "day", "", "the `day` to reconcile, YYYY-MM-DD (default: yesterday, UTC)")
	c.StringVar(&from, "from", "", "first `day` of a range, YYYY-MM-DD (with -to)")
	c.StringVar(&to, "to", "", "last `day` of a range, YYYY-MM-DD, inclusive (with -from)")
	c.StringVar(&tenant, "tenant", "", "only this tenant `id` (default: every tenant)")
	c.BoolVar(&stored, "stored", false, "list the stored daily reconciliations instead of asking Stripe now")
	c.BoolVar(&differences, "differences", false, "only the rows that are not a match")
	if _, err := c.parse(a); err != nil {
		return err
	}
	switch {
	case day != "" && (from != "" || to != ""):
		return c.usageErr("-day and -from/-to exclude each other")
	case (from == "") != (to == ""):
		return c.usageErr("-from and -to go together")
	case day == "" && from == "":
		day = a.now().UTC().AddDate(0, 0, -1).Format(time.DateOnly)
	}
	if day != "" {
		from, to = day, day
	}
	for _, d := range []string{from, to} {
		if _, err := time.Parse(time.DateOnly, d); err != nil {
			return c.usageErr(fmt.Sprintf("%q is not a day (YYYY-MM-DD)", d))
		}
	}
	ctx, client, err := serviceClient(ctx, a, billingv1.NewReconciliationServiceClient)
	if err != nil {
		return err
	}
	var rows []*billingv1.Reconciliation
	if stored {
		token := ""
		for range 1000 {
			cctx, cancel := a.callContext(ctx)
			resp, err := client.ListReconciliations(cctx, &billingv1.ListReconciliationsRequest{StartDay: from, EndDay: to, TenantId: tenant, PageSize: 1000, PageToken: token})
			cancel()
			if err != nil {
				return err
			}
			rows = append(rows, resp.GetReconciliations()...)
			if token = resp.GetNextPageToken(); token == "" {
				break
			}
		}
	} else {
		cctx, cancel := a.callContext(ctx)
		resp, err := client.ReconcileUsage(cctx, &billingv1.ReconcileUsageRequest{StartDay: from, EndDay: to, TenantId: tenant})
		cancel()
		if err != nil {
			return err
		}
		rows = resp.GetReconciliations()
	}
	n := 0
	kept := rows[:0:0]
	for _, r := range rows {
		if r.GetExplanation() != "match" {
			n++
		}
		if !differences || r.GetExplanation() != "match" {
			kept = append(kept, r)
		}
	}
	if err := a.emit(&billingv1.ReconcileUsageResponse{Reconciliations: kept, Differences: int32(n)}, func(w io.Writer) error { return writeReconciliations(w, kept) }); err != nil {
		return err
	}
	if a.output != "json" {
		fmt.Fprintf(a.stderr, "%d of %d rows differ\n", n, len(rows))
	}
	return nil
}

func writeReconciliations(w io.Writer, rows []*billingv1.Reconciliation) error {
	t := newTable(w, "DAY", "TENANT", "METER", "OURS", "REPORTED", "STRIPE", "DIFF", "EXPLANATION")
	for _, r := range rows {
		stripe := "-"
		if r.Stripe != nil {
			stripe = strconv.FormatInt(r.GetStripe(), 10)
		}
		t.row(r.GetDay(), r.GetTenantId(), r.GetMeter(), strconv.FormatInt(r.GetOurs(), 10), strconv.FormatInt(r.GetReported(), 10),
			stripe, strconv.FormatInt(r.GetDifference(), 10), r.GetExplanation())
	}
	return t.flush()
}
