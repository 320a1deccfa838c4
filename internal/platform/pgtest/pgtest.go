// Package pgtest gives each test its own throwaway PostgreSQL database on the real server that
// `make test` starts (scripts/devenv.sh), so store tests run in parallel and leave nothing behind.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/campaignmesh/campaignmesh/internal/platform/devstate"
)

// DefaultServerURL is the development server of scripts/devenv.sh (its admin's password comes
// from .state/env's passfile; this default serves only to name the server in errors).
const DefaultServerURL = "postgres://campaignmesh@127.0.0.1:15432"

// ServerURL returns the server to test against: CM_POSTGRES_URL (from the environment or
// .state/env), or the dev server.
func ServerURL() string {
	if u := devstate.Getenv("CM_POSTGRES_URL"); u != "" {
		return u
	}
	return DefaultServerURL
}

// NewDatabase creates an empty database for tb and returns its URL. The database is dropped
// when the test ends. The test fails (it does not skip) when PostgreSQL is unreachable: run
// `make test`, or `scripts/devenv.sh up` before `go test`.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin := withDatabase(tb, ServerURL(), "postgres")
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		tb.Fatalf("connect to test postgres (start it with scripts/devenv.sh up): %v", err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "test_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create test database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			tb.Errorf("connect to drop test database: %v", err)
			return
		}
		defer conn.Close(ctx)
		// FORCE may not end sessions of another role (a service role a test logged in as) while
		// they are still closing; give them a moment rather than fail the test over cleanup.
		for range 25 {
			if _, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err == nil {
				return
			}
			time.Sleep(200 * time.Millisecond) // polling under the 20 s cleanup deadline
		}
		tb.Errorf("drop test database: %v", err)
	})
	return withDatabase(tb, ServerURL(), name)
}

func withDatabase(tb testing.TB, server, db string) string {
	tb.Helper()
	u, err := url.Parse(server)
	if err != nil {
		tb.Fatalf("parse CM_POSTGRES_URL: invalid format")
	}
	u.Path = "/" + db
	q := u.Query()
	if q.Get("sslmode") == "" {
		q.Set("sslmode", "disable")
	}
	u.RawQuery = q.Encode()
	return u.String()
}
