// Package chtest gives each test its own ClickHouse database on the real server that
// `make test` starts (scripts/devenv.sh).
package chtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/campaignmesh/campaignmesh/internal/platform/devstate"
)

// Addr is the server to test against: CM_CLICKHOUSE_ADDR, or the dev server.
func Addr() string {
	if a := devstate.Getenv("CM_CLICKHOUSE_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:19000"
}

// NewDatabase creates an empty database for tb and returns its name; it is dropped when the
// test ends. The test fails when ClickHouse is unreachable (start it with scripts/devenv.sh up).
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin := Admin(tb)
	conn, err := ch.Open(&ch.Options{Addr: []string{Addr()}, Auth: ch.Auth{Username: admin.Name, Password: admin.Password}, DialTimeout: 5 * time.Second})
	if err == nil {
		err = conn.Ping(ctx)
	}
	if err != nil {
		tb.Fatalf("connect to test clickhouse (start it with scripts/devenv.sh up): %v", err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "test_" + hex.EncodeToString(b)
	if err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create test database: %v", err)
	}
	tb.Cleanup(func() {
		defer conn.Close()
		if err := conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name); err != nil {
			tb.Errorf("drop test database: %v", err)
		}
	})
	return name
}
