package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"google.golang.org/protobuf/proto"
)

var userCommands = []*command{
	{name: "list", summary: "list the users of your tenant, oldest first", run: runUsersList},
	{name: "get", args: "ID", summary: "show one user", run: runUsersGet},
	{
		name:    "create",
		summary: "add a user to your tenant",
		details: `Without -password-stdin or -password-file the initial password (12-1024 bytes) is
read from the terminal (or the first line of stdin).`,
		run: runUsersCreate,
	},
	{name: "disable", args: "ID", summary: "stop a user from logging in", run: runUsersDisable},
	{name: "set-role", args: "ID ROLE", summary: "give a user another role: " + roleNames, run: runUsersSetRole},
	{name: "unlock", args: "ID", summary: "clear a user's lock after too many failed logins", run: runUsersUnlock},
	{
		name:    "revoke-sessions",
		args:    "ID",
		summary: "end every session of a user",
		details: "Access tokens already issued stay valid until they expire (minutes).",
		run:     runUsersRevokeSessions,
	},
}

// roles are the roles a tenant user can be given; platform operators are not made here.
var roles = map[string]authv1.Role{
	"admin":   authv1.Role_ROLE_ADMIN,
	"manager": authv1.Role_ROLE_MANAGER,
	"analyst": authv1.Role_ROLE_ANALYST,
	"viewer":  authv1.Role_ROLE_VIEWER,

	"privacy_officer": authv1.Role_ROLE_PRIVACY_OFFICER,
}

const roleNames = "admin, manager, analyst, viewer or privacy_officer"

// parseRole maps a role name, in any case, to its Role.
func parseRole(s string) (authv1.Role, error) {
	if r, ok := roles[strings.ToLower(s)]; ok {
		return r, nil
	}
	return authv1.Role_ROLE_UNSPECIFIED, fmt.Errorf("unknown role %q: want %s", s, roleNames)
}

// roleName shows a role as people type it: "admin", "platform_operator".
func roleName(r authv1.Role) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_"))
}

var runUsersList = listCommand(
	func(ctx context.Context, client authv1.AuthServiceClient, size int32, token string) ([]*authv1.User, string, error) {
		resp, err := client.ListUsers(ctx, &authv1.ListUsersRequest{PageSize: size, PageToken: token})
		return resp.GetUsers(), resp.GetNextPageToken(), err
	},
	func(us []*authv1.User, next string) proto.Message {
		return &authv1.ListUsersResponse{Users: us, NextPageToken: next}
	},
	writeUsers,
)

func runUsersGet(ctx context.Context, a *app, c *cmdline) error {
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	return callOne(ctx, a, writeUser, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.User, error) {
		return client.GetUser(ctx, &authv1.GetUserRequest{Id: args[0]})
	})
}

func runUsersCreate(ctx context.Context, a *app, c *cmdline) error {
	var (
		email, name string
		role        authv1.Role
		pw          passwordFlags
		rid         requestIDFlag
	)
	c.StringVar(&email, "email", "", "`email` the user logs in with (required)")
	c.StringVar(&name, "name", "", "display `name`")
	c.Func("role", "`role`: "+roleNames+" (required)", func(s string) error {
		var err error
		role, err = parseRole(s)
		return err
	})
	pw.register(c)
	rid.register(c)
	if _, err := c.parse(a); err != nil {
		return err
	}
	if err := rid.resolve(c); err != nil {
		return err
	}
	switch {
	case email == "":
		return c.usageErr("-email is required")
	case role == authv1.Role_ROLE_UNSPECIFIED:
		return c.usageErr("-role is required")
	case pw.stdin && pw.file != "":
		return c.usageErr("-password-stdin and -password-file are exclusive")
	}
	var password string
	var err error
	if pw.given() {
		password, err = pw.read(a)
	} else {
		password, err = a.promptPassword("initial password for " + email)
	}
	if err != nil {
		return err
	}
	return callOne(ctx, a, writeUser, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.User, error) {
		return client.CreateUser(ctx, &authv1.CreateUserRequest{
			User:      &authv1.User{Email: email, DisplayName: name, Role: role},
			Password:  password,
			RequestId: rid.sending(a),
		})
	})
}

func runUsersDisable(ctx context.Context, a *app, c *cmdline) error {
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	return callOne(ctx, a, writeUser, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.User, error) {
		return client.DisableUser(ctx, &authv1.DisableUserRequest{Id: args[0]})
	})
}

func runUsersSetRole(ctx context.Context, a *app, c *cmdline) error {
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	role, err := parseRole(args[1])
	if err != nil {
		return c.usageErr(err.Error())
	}
	return callOne(ctx, a, writeUser, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.User, error) {
		return client.ChangeUserRole(ctx, &authv1.ChangeUserRoleRequest{Id: args[0], Role: role})
	})
}

func runUsersUnlock(ctx context.Context, a *app, c *cmdline) error {
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	return callOne(ctx, a, writeUser, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.User, error) {
		return client.UnlockUser(ctx, &authv1.UnlockUserRequest{Id: args[0]})
	})
}

func runUsersRevokeSessions(ctx context.Context, a *app, c *cmdline) error {
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	return callOne(ctx, a, writeRevokedSessions, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.RevokeUserSessionsResponse, error) {
		return client.RevokeUserSessions(ctx, &authv1.RevokeUserSessionsRequest{Id: args[0]})
	})
}

func writeRevokedSessions(w io.Writer, r *authv1.RevokeUserSessionsResponse) error {
	n := r.GetRevokedSessions()
	_, err := fmt.Fprintf(w, "ended %d %s\n", n, plural(n, "session", "sessions"))
	return err
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func runRoles(ctx context.Context, a *app, c *cmdline) error {
	if _, err := c.parse(a); err != nil {
		return err
	}
	return callOne(ctx, a, writeRoles, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.ListRolesResponse, error) {
		return client.ListRoles(ctx, &authv1.ListRolesRequest{})
	})
}

func writeRoles(w io.Writer, r *authv1.ListRolesResponse) error {
	t := newTable(w, "ROLE", "PERMISSIONS")
	for _, ri := range r.GetRoles() {
		t.row(roleName(ri.GetRole()), strings.Join(ri.GetPermissions(), ","))
	}
	return t.flush()
}

func writeUser(w io.Writer, u *authv1.User) error { return writeUsers(w, []*authv1.User{u}) }
