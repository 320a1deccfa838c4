package main

import (
	"context"
	"io"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

var keyCommands = []*command{
	{name: "list", summary: "list the public keys that verify access tokens, newest first", run: runKeysList},
	{
		name:    "rotate",
		summary: "make a new key sign access tokens (platform operators)",
		details: "The old key keeps verifying tokens until the tokens it signed have expired.",
		run:     runKeysRotate,
	},
}

func runKeysList(ctx context.Context, a *app, c *cmdline) error {
	if _, err := c.parse(a); err != nil {
		return err
	}
	// ListSigningKeys is public: no login needed.
	ctx, client, err := a.connect(ctx, false)
	if err != nil {
		return err
	}
	ctx, cancel := a.callContext(ctx)
	defer cancel()
	resp, err := client.ListSigningKeys(ctx, &authv1.ListSigningKeysRequest{})
	if err != nil {
		return err
	}
	return a.emit(resp, func(w io.Writer) error { return writeKeys(w, resp.GetKeys()) })
}

func runKeysRotate(ctx context.Context, a *app, c *cmdline) error {
	if _, err := c.parse(a); err != nil {
		return err
	}
	return callOne(ctx, a, writeKey, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.SigningKey, error) {
		return client.RotateSigningKey(ctx, &authv1.RotateSigningKeyRequest{})
	})
}

func writeKey(w io.Writer, k *authv1.SigningKey) error { return writeKeys(w, []*authv1.SigningKey{k}) }
