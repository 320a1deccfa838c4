package main

import (
	"context"
	"io"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"google.golang.org/protobuf/proto"
)

var tenantCommands = []*command{
	{name: "list", summary: "list tenants, oldest first", run: runTenantsList},
	{name: "get", args: "ID", summary: "show one tenant", run: runTenantsGet},
	{name: "create", summary: "create a tenant", run: runTenantsCreate},
	{name: "suspend", args: "ID", summary: "stop a tenant's users from logging in", run: runTenantsSuspend},
}

var runTenantsList = listCommand(
	func(ctx context.Context, client authv1.AuthServiceClient, size int32, token string) ([]*authv1.Tenant, string, error) {
		resp, err := client.ListTenants(ctx, &authv1.ListTenantsRequest{PageSize: size, PageToken: token})
		return resp.GetTenants(), resp.GetNextPageToken(), err
	},
	func(ts []*authv1.Tenant, next string) proto.Message {
		return &authv1.ListTenantsResponse{Tenants: ts, NextPageToken: next}
	},
	writeTenants,
)

func runTenantsGet(ctx context.Context, a *app, c *cmdline) error {
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	return callOne(ctx, a, writeTenant, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.Tenant, error) {
		return client.GetTenant(ctx, &authv1.GetTenantRequest{Id: args[0]})
	})
}

func runTenantsCreate(ctx context.Context, a *app, c *cmdline) error {
	var (
		slug, name string
		rid        requestIDFlag
	)
	c.StringVar(&slug, "slug", "", "`slug` users type at login: 3-40 of a-z, 0-9 and '-' (required)")
	c.StringVar(&name, "name", "", "display `name` (required)")
	rid.register(c)
	if _, err := c.parse(a); err != nil {
		return err
	}
	if slug == "" || name == "" {
		return c.usageErr("-slug and -name are required")
	}
	if err := rid.resolve(c); err != nil {
		return err
	}
	return callOne(ctx, a, writeTenant, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.Tenant, error) {
		return client.CreateTenant(ctx, &authv1.CreateTenantRequest{
			Tenant:    &authv1.Tenant{Slug: slug, DisplayName: name},
			RequestId: rid.sending(a),
		})
	})
}

func runTenantsSuspend(ctx context.Context, a *app, c *cmdline) error {
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	return callOne(ctx, a, writeTenant, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.Tenant, error) {
		return client.SuspendTenant(ctx, &authv1.SuspendTenantRequest{Id: args[0]})
	})
}

func writeTenant(w io.Writer, t *authv1.Tenant) error { return writeTenants(w, []*authv1.Tenant{t}) }
