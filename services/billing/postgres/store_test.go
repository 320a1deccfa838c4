package postgres_test

import (
	"context"
	"testing"

	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/services/billing/postgres"
)

// MustOpen opens a store on a fresh database of its own, closed when the test ends.
func MustOpen(tb testing.TB) *postgres.Store {
	tb.Helper()
	s, err := postgres.Open(context.Background(), pgtest.NewDatabase(tb))
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

func TestOpenCreatesTables(t *testing.T) {
	s := MustOpen(t)
	var n int
	if err := s.Pool().QueryRow(context.Background(), `SELECT count(*) FROM usage`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("usage table: n=%d err=%v", n, err)
	}
}
