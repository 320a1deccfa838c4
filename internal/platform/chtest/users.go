package chtest

import (
	"os"
	"strings"
	"testing"

	"github.com/campaignmesh/campaignmesh/internal/platform/devstate"
)

// User is a ClickHouse user and its password (convertible to clickhouse.User).
type User struct {
	Name, Password string
}

// user reads a user from the environment that .state/env provides: PREFIX_USER and
// PREFIX_PASSWORD_FILE. ok is false when PREFIX_USER is unset.
func user(tb testing.TB, prefix string) (User, bool) {
	tb.Helper()
	name := devstate.Getenv(prefix + "_USER")
	if name == "" {
		return User{}, false
	}
	u := User{Name: name}
	if f := devstate.Getenv(prefix + "_PASSWORD_FILE"); f != "" {
		data, err := os.ReadFile(f)
		if err != nil {
			tb.Fatalf("read %s_PASSWORD_FILE: %v", prefix, err)
		}
		u.Password = strings.TrimRight(string(data), "\r\n")
	}
	return u, true
}

// Admin is the administrative user (CM_CLICKHOUSE_USER, CM_CLICKHOUSE_PASSWORD_FILE): it
// creates and drops the test databases. Without the variables, the passwordless default user
// of a server configured before users existed.
func Admin(tb testing.TB) User {
	tb.Helper()
	if u, ok := user(tb, "CM_CLICKHOUSE"); ok {
		return u
	}
	return User{Name: "default"}
}

// Writer is analytics' writer user (CM_CLICKHOUSE_WRITER_USER, …_PASSWORD_FILE), or Admin
// on a server without role users.
func Writer(tb testing.TB) User {
	tb.Helper()
	if u, ok := user(tb, "CM_CLICKHOUSE_WRITER"); ok {
		return u
	}
	return Admin(tb)
}

// Reader is analytics' read-only query user (CM_CLICKHOUSE_READER_USER, …_PASSWORD_FILE), or
// Admin on a server without role users.
func Reader(tb testing.TB) User {
	tb.Helper()
	if u, ok := user(tb, "CM_CLICKHOUSE_READER"); ok {
		return u
	}
	return Admin(tb)
}

// RequireRoleUsers skips tb on a server set up before the role users existed (its .state/env
// names no reader user): tests of the users' rights need them.
func RequireRoleUsers(tb testing.TB) {
	tb.Helper()
	if devstate.Getenv("CM_CLICKHOUSE_READER_USER") == "" || devstate.Getenv("CM_CLICKHOUSE_WRITER_USER") == "" {
		tb.Skip("ClickHouse role users not configured (CM_CLICKHOUSE_READER_USER unset): run scripts/devenv.sh up to recreate .state/env")
	}
}
