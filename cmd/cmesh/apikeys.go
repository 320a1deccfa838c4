package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

var apiKeyCommands = []*command{
	{
		name:    "create",
		summary: "create an API key and show its secret once",
		details: `The key's scopes must be among your own permissions (see cmesh whoami and cmesh roles).
The secret is printed once and never again: store it now. Send it as
"authorization: Bearer <secret>".`,
		run: runAPIKeysCreate,
	},
	{name: "list", summary: "list the API keys of your tenant, oldest first", run: runAPIKeysList},
	{name: "get", args: "ID", summary: "show one API key (never its secret)", run: runAPIKeysGet},
	{
		name:    "revoke",
		args:    "ID",
		summary: "revoke an API key",
		details: "Services refuse the key within 30s.",
		run:     runAPIKeysRevoke,
	},
}

// scopesFlag collects -scope values: the flag repeats, and each value may hold several
// scopes separated by commas. Duplicates are dropped, first occurrence first.
type scopesFlag []string

func (s *scopesFlag) String() string { return strings.Join(*s, ",") }

func (s *scopesFlag) Set(v string) error {
	for scope := range strings.SplitSeq(v, ",") {
		scope = strings.TrimSpace(scope)
		switch {
		case scope == "":
			return errors.New("empty scope")
		case strings.ContainsFunc(scope, func(r rune) bool { return r <= ' ' || r == 0x7f }):
			return fmt.Errorf("scope %q has a space or control character", scope)
		case !slices.Contains(*s, scope):
			*s = append(*s, scope)
		}
	}
	return nil
}

func runAPIKeysCreate(ctx context.Context, a *app, c *cmdline) error {
	var (
		name       string
		scopes     scopesFlag
		expires    time.Duration
		expireTime string
		rid        requestIDFlag
	)
	c.StringVar(&name, "name", "", "`name` of the key, 1-100 characters (required)")
	c.Var(&scopes, "scope", "`permission` the key holds, e.g. events.write; repeat the flag or separate with commas (required)")
	c.DurationVar(&expires, "expires", 0, "the key expires after this `duration`, e.g. 720h (default: never)")
	c.StringVar(&expireTime, "expire-time", "", "the key expires at this RFC 3339 `time` (default: never)")
	rid.register(c)
	if _, err := c.parse(a); err != nil {
		return err
	}
	req := &authv1.CreateApiKeyRequest{Name: name, Scopes: scopes}
	switch {
	case name == "":
		return c.usageErr("-name is required")
	case len(scopes) == 0:
		return c.usageErr("-scope is required")
	case expires != 0 && expireTime != "":
		return c.usageErr("-expires and -expire-time are exclusive")
	case expires < 0:
		return c.usageErr("-expires must be positive")
	case expires > 0:
		req.ExpireTime = timestamppb.New(a.now().Add(expires))
	case expireTime != "":
		t, err := parseTimeFlag("expire-time", expireTime)
		if err != nil {
			return c.usageErr(err.Error())
		}
		if !t.After(a.now()) {
			return c.usageErr(fmt.Sprintf("-expire-time %s is not in the future", expireTime))
		}
		req.ExpireTime = timestamppb.New(t)
	}
	if err := rid.resolve(c); err != nil {
		return err
	}
	return callOne(ctx, a, writeCreatedAPIKey, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.CreateApiKeyResponse, error) {
		req.RequestId = rid.sending(a)
		return client.CreateApiKey(ctx, req)
	})
}

var runAPIKeysList = listCommand(
	func(ctx context.Context, client authv1.AuthServiceClient, size int32, token string) ([]*authv1.ApiKey, string, error) {
		resp, err := client.ListApiKeys(ctx, &authv1.ListApiKeysRequest{PageSize: size, PageToken: token})
		return resp.GetApiKeys(), resp.GetNextPageToken(), err
	},
	func(ks []*authv1.ApiKey, next string) proto.Message {
		return &authv1.ListApiKeysResponse{ApiKeys: ks, NextPageToken: next}
	},
	writeAPIKeys,
)

func runAPIKeysGet(ctx context.Context, a *app, c *cmdline) error {
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	return callOne(ctx, a, writeAPIKey, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.ApiKey, error) {
		return client.GetApiKey(ctx, &authv1.GetApiKeyRequest{Id: args[0]})
	})
}

func runAPIKeysRevoke(ctx context.Context, a *app, c *cmdline) error {
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	return callOne(ctx, a, writeAPIKey, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.ApiKey, error) {
		return client.RevokeApiKey(ctx, &authv1.RevokeApiKeyRequest{Id: args[0]})
	})
}

func writeAPIKeys(w io.Writer, keys []*authv1.ApiKey) error {
	t := newTable(w, "ID", "NAME", "SCOPES", "PREFIX", "EXPIRES", "LAST USED", "REVOKED")
	for _, k := range keys {
		t.row(k.GetId(), k.GetName(), strings.Join(k.GetScopes(), ","), k.GetSecretPrefix(),
			formatTimestampOr(k.GetExpireTime(), "never"),
			formatTimestampOr(k.GetLastUsedTime(), "never"),
			formatTimestampOr(k.GetRevokeTime(), "-"))
	}
	return t.flush()
}

func writeAPIKey(w io.Writer, k *authv1.ApiKey) error { return writeAPIKeys(w, []*authv1.ApiKey{k}) }

// writeCreatedAPIKey shows the new key and, on a line of its own, its secret: the only time
// anyone sees it.
func writeCreatedAPIKey(w io.Writer, r *authv1.CreateApiKeyResponse) error {
	if err := writeAPIKey(w, r.GetApiKey()); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nsecret (shown once): %s\n", cell(r.GetSecret()))
	return err
}
