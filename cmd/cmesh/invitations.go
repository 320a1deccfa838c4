package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

var invitationCommands = []*command{
	{
		name:    "create",
		summary: "invite someone to your tenant (or, as an operator, to any tenant) and show the token once",
		details: `Tenant admins invite into their own tenant, with a role whose permissions they all hold.
Platform operators name the tenant with -tenant (its id, see cmesh tenants list) and may
give any tenant role: this is how a new tenant gets its first admin.

The one-time token is printed once and never again: hand it to the invitee privately.
They join with "cmesh invitations accept -token TOKEN". It expires after -expires
(default 7 days, at most 30 days).`,
		run: runInvitationsCreate,
	},
	{name: "list", summary: "list the invitations of your tenant, oldest first", run: runInvitationsList},
	{
		name:    "revoke",
		args:    "ID",
		summary: "withdraw a pending invitation",
		details: "An accepted invitation cannot be revoked: disable its user instead.",
		run:     runInvitationsRevoke,
	},
	{
		name:    "accept",
		summary: "join a tenant with an invitation token and choose your password",
		details: `No login is needed. Without -password-stdin or -password-file the new password
(12-1024 bytes) is read from the terminal, twice (or from the first line of stdin).
Then log in with the tenant and email it prints.`,
		run: runInvitationsAccept,
	},
}

func runInvitationsCreate(ctx context.Context, a *app, c *cmdline) error {
	var (
		email, tenant string
		role          authv1.Role
		expires       time.Duration
		rid           requestIDFlag
	)
	c.StringVar(&email, "email", "", "`email` the invitee will log in with (required)")
	c.Func("role", "`role`: "+roleNames+" (required)", func(s string) error {
		var err error
		role, err = parseRole(s)
		return err
	})
	c.StringVar(&tenant, "tenant", "", "tenant `id` to invite into (platform operators; default: your own tenant)")
	c.DurationVar(&expires, "expires", 0, "the token expires after this `duration`, e.g. 72h (default 168h, at most 720h)")
	rid.register(c)
	if _, err := c.parse(a); err != nil {
		return err
	}
	inv := &authv1.Invitation{Email: email, Role: role}
	switch {
	case email == "":
		return c.usageErr("-email is required")
	case role == authv1.Role_ROLE_UNSPECIFIED:
		return c.usageErr("-role is required")
	case expires < 0:
		return c.usageErr("-expires must be positive")
	case expires > 0:
		inv.ExpireTime = timestamppb.New(a.now().Add(expires))
	}
	if err := rid.resolve(c); err != nil {
		return err
	}
	return callOne(ctx, a, writeCreatedInvitation, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.CreateInvitationResponse, error) {
		if tenant != "" {
			return client.CreateTenantInvitation(ctx, &authv1.CreateTenantInvitationRequest{TenantId: tenant, Invitation: inv, RequestId: rid.sending(a)})
		}
		return client.CreateInvitation(ctx, &authv1.CreateInvitationRequest{Invitation: inv, RequestId: rid.sending(a)})
	})
}

var runInvitationsList = listCommand(
	func(ctx context.Context, client authv1.AuthServiceClient, size int32, token string) ([]*authv1.Invitation, string, error) {
		resp, err := client.ListInvitations(ctx, &authv1.ListInvitationsRequest{PageSize: size, PageToken: token})
		return resp.GetInvitations(), resp.GetNextPageToken(), err
	},
	func(is []*authv1.Invitation, next string) proto.Message {
		return &authv1.ListInvitationsResponse{Invitations: is, NextPageToken: next}
	},
	writeInvitations,
)

func runInvitationsRevoke(ctx context.Context, a *app, c *cmdline) error {
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	return callOne(ctx, a, writeInvitation, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.Invitation, error) {
		return client.RevokeInvitation(ctx, &authv1.RevokeInvitationRequest{Id: args[0]})
	})
}

func runInvitationsAccept(ctx context.Context, a *app, c *cmdline) error {
	var (
		token, name string
		pw          passwordFlags
	)
	c.StringVar(&token, "token", "", "the invitation `token` (cmi_…) you were given (required)")
	c.StringVar(&name, "name", "", "your display `name`")
	pw.register(c)
	if _, err := c.parse(a); err != nil {
		return err
	}
	switch {
	case token == "":
		return c.usageErr("-token is required")
	case pw.stdin && pw.file != "":
		return c.usageErr("-password-stdin and -password-file are exclusive")
	}
	password, err := a.readNewPassword(pw)
	if err != nil {
		return err
	}
	ctx, client, err := a.connect(ctx, false)
	if err != nil {
		return err
	}
	ctx, cancel := a.callContext(ctx)
	defer cancel()
	resp, err := client.AcceptInvitation(ctx, &authv1.AcceptInvitationRequest{Token: token, DisplayName: name, Password: password})
	if err != nil {
		return err
	}
	return a.emit(resp, func(w io.Writer) error { return writeAcceptedInvitation(w, resp) })
}

// readNewPassword reads a password being chosen: from the flags' source, or from the terminal
// twice (it is not echoed), or from the first line of stdin.
func (a *app) readNewPassword(pw passwordFlags) (string, error) {
	if pw.given() {
		return pw.read(a)
	}
	password, err := a.promptPassword("new password")
	if err != nil {
		return "", err
	}
	if _, tty := a.stdinTerminal(); tty {
		again, err := a.promptPassword("new password again")
		if err != nil {
			return "", err
		}
		if again != password {
			return "", errors.New("the passwords do not match")
		}
	}
	return password, nil
}

func writeInvitations(w io.Writer, is []*authv1.Invitation) error {
	t := newTable(w, "ID", "EMAIL", "ROLE", "STATE", "EXPIRES", "ACCEPTED", "USER")
	for _, i := range is {
		user := i.GetUserId()
		if user == "" {
			user = "-"
		}
		t.row(i.GetId(), i.GetEmail(), roleName(i.GetRole()), stateName(i.GetState()),
			formatTimestamp(i.GetExpireTime()), formatTimestamp(i.GetAcceptTime()), user)
	}
	return t.flush()
}

func writeInvitation(w io.Writer, i *authv1.Invitation) error {
	return writeInvitations(w, []*authv1.Invitation{i})
}

// writeCreatedInvitation shows the new invitation and, on a line of its own, its token: the
// only time anyone sees it. A retried request (same -request-id) gets no token back.
func writeCreatedInvitation(w io.Writer, r *authv1.CreateInvitationResponse) error {
	if err := writeInvitation(w, r.GetInvitation()); err != nil {
		return err
	}
	if r.GetSecret() == "" {
		_, err := fmt.Fprintln(w, "\nno token: this request was already done, and the token is shown only the first time (revoke this invitation and create another if it is lost)")
		return err
	}
	_, err := fmt.Fprintf(w, "\ntoken (shown once): %s\nhand it to %s privately; they join with: cmesh invitations accept -token <token> -name <name>\n",
		cell(r.GetSecret()), cell(r.GetInvitation().GetEmail()))
	return err
}

func writeAcceptedInvitation(w io.Writer, r *authv1.AcceptInvitationResponse) error {
	if err := writeUser(w, r.GetUser()); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nwelcome: log in with cmesh login -tenant %s -email %s\n", cell(r.GetTenantSlug()), cell(r.GetUser().GetEmail()))
	return err
}
