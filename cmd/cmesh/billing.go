package main

import (
	"context"
	"io"

	"google.golang.org/protobuf/proto"

	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
)

// billingCommands are the billing service's commands: the tenants' Stripe accounts.
var billingCommands = []*command{
	{name: "account", summary: "tenants' billing accounts: their Stripe customer and standing", subs: billingAccountCommands},
}

var billingAccountCommands = []*command{
	{
		name:    "set",
		args:    "TENANT CUSTOMER",
		summary: "map a tenant to an existing Stripe customer (cus_…)",
		details: `Billing never creates Stripe customers: create the customer in Stripe, then map it.
A customer already mapped to another tenant is refused (AlreadyExists). The standing is
reset to ok: this is how an operator reinstates a flagged or suspended account (resuming a
suspended tenant in auth is a separate step). Audited.

Needs the billing.manage permission (platform operators).`,
		run: runBillingAccountSet,
	},
	{
		name:    "get",
		args:    "[TENANT]",
		summary: "show a tenant's billing account and standing",
		details: `Without TENANT, your own tenant's. Standing: ok; flagged (a payment failed or the
subscription lapsed: the tenant is suspended when it stays flagged past the billing
service's -grace-period, default 7 days; a paid invoice clears the flag); suspended (only an
operator reinstates it, with cmesh billing account set).

Needs the usage.read permission (admin, manager; platform operators name any tenant).`,
		run: runBillingAccountGet,
	},
	{
		name:    "list",
		summary: "list every tenant's billing account",
		details: `Needs the billing.manage permission (platform operators).`,
		run:     runBillingAccountList,
	},
}

func callBillingAccounts[M proto.Message](ctx context.Context, a *app, table func(io.Writer, M) error, call func(context.Context, billingv1.BillingAccountServiceClient) (M, error)) error {
	return callService(ctx, a, billingv1.NewBillingAccountServiceClient, table, call)
}

func runBillingAccountSet(ctx context.Context, a *app, c *cmdline) error {
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	return callBillingAccounts(ctx, a, writeBillingAccount, func(ctx context.Context, client billingv1.BillingAccountServiceClient) (*billingv1.BillingAccount, error) {
		return client.SetBillingAccount(ctx, &billingv1.SetBillingAccountRequest{TenantId: args[0], StripeCustomerId: args[1]})
	})
}

func runBillingAccountGet(ctx context.Context, a *app, c *cmdline) error {
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	req := &billingv1.GetBillingAccountRequest{}
	if len(args) == 1 {
		req.TenantId = args[0]
	}
	return callBillingAccounts(ctx, a, writeBillingAccount, func(ctx context.Context, client billingv1.BillingAccountServiceClient) (*billingv1.BillingAccount, error) {
		return client.GetBillingAccount(ctx, req)
	})
}

func runBillingAccountList(ctx context.Context, a *app, c *cmdline) error {
	var l listFlags
	l.register(c)
	if _, err := c.parse(a); err != nil {
		return err
	}
	if err := l.check(c); err != nil {
		return err
	}
	ctx, client, err := serviceClient(ctx, a, billingv1.NewBillingAccountServiceClient)
	if err != nil {
		return err
	}
	accs, next, err := listPages(ctx, a, &l, func(ctx context.Context, token string) ([]*billingv1.BillingAccount, string, error) {
		resp, err := client.ListBillingAccounts(ctx, &billingv1.ListBillingAccountsRequest{PageSize: int32(l.pageSize), PageToken: token})
		return resp.GetAccounts(), resp.GetNextPageToken(), err
	})
	if err != nil {
		return err
	}
	resp := &billingv1.ListBillingAccountsResponse{Accounts: accs, NextPageToken: next}
	if err := a.emit(resp, func(w io.Writer) error {
		t := newTable(w, "TENANT", "CUSTOMER", "STATUS", "SINCE", "SUBSCRIPTION", "REASON")
		for _, acc := range accs {
			since := acc.GetFlagTime()
			if acc.GetStatus() == billingv1.BillingAccount_STATUS_SUSPENDED {
				since = acc.GetSuspendTime()
			}
			t.row(acc.GetTenantId(), acc.GetStripeCustomerId(), enumName(acc.GetStatus(), "STATUS_"), formatTimestamp(since),
				orDash(acc.GetSubscriptionStatus()), orDash(acc.GetStatusReason()))
		}
		return t.flush()
	}); err != nil {
		return err
	}
	a.notePage(next)
	return nil
}

func writeBillingAccount(w io.Writer, acc *billingv1.BillingAccount) error {
	t := newTable(w)
	t.row("TENANT", acc.GetTenantId())
	t.row("CUSTOMER", acc.GetStripeCustomerId())
	t.row("STATUS", enumName(acc.GetStatus(), "STATUS_"))
	if r := acc.GetStatusReason(); r != "" {
		t.row("REASON", r)
	}
	if acc.GetFlagTime() != nil {
		t.row("FLAGGED", formatTimestamp(acc.GetFlagTime()))
	}
	if acc.GetSuspendTime() != nil {
		t.row("SUSPENDED", formatTimestamp(acc.GetSuspendTime()))
	}
	t.row("SUBSCRIPTION", orDash(acc.GetSubscriptionStatus()))
	t.row("UPDATED", formatTimestamp(acc.GetUpdateTime()))
	return t.flush()
}
