package main

import (
	"context"
	"io"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

var signingKeyCommands = []*command{
	{name: "list", summary: "list the public keys that verify access tokens, newest first", run: runSigningKeysList},
	{
		name:    "rotate",
		summary: "make a new key sign access tokens (platform operators)",
		details: "The old key keeps verifying tokens until the tokens it signed have expired.",
		run:     runSigningKeysRotate,
	},
}

func runSigningKeysList(ctx context.Context, a *app, c *cmdline) error {
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
	return a.emit(resp, func(w io.Writer) error { return writeSigningKeys(w, resp.GetKeys()) })
}

func runSigningKeysRotate(ctx context.Context, a *app, c *cmdline) error {
	if _, err := c.parse(a); err != nil {
		return err
	}
	return callOne(ctx, a, writeSigningKey, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.SigningKey, error) {
		return client.RotateSigningKey(ctx, &authv1.RotateSigningKeyRequest{})
	})
}

func writeSigningKey(w io.Writer, k *authv1.SigningKey) error {
	return writeSigningKeys(w, []*authv1.SigningKey{k})
}
