package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
)

// Pruning deletes only the dedup keys older than the cut-off, at most limit a call.
func TestPruneProviderEvents(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	now := time.Now()
	for i, age := range []time.Duration{10 * 24 * time.Hour, 8 * 24 * time.Hour, time.Hour} {
		if _, err := s.Pool().Exec(ctx, `
			INSERT INTO provider_events (provider, message_id, event_type, event_time, tenant_id, ledger_id, finished, create_time)
			VALUES ('sendgrid', $1, 'delivered', now(), 't1', 1, true, $2)`, string(rune('a'+i)), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	tr := postgres.NewTracking(s.Pool())
	cut := now.Add(-7 * 24 * time.Hour)
	for _, want := range []int{1, 1, 0} {
		if n, err := tr.PruneProviderEvents(ctx, cut, 1); err != nil || n != want {
			t.Fatalf("prune: %d %v, want %d", n, err, want)
		}
	}
	if n := count(t, s, `SELECT count(*) FROM provider_events`); n != 1 {
		t.Errorf("%d keys left, want the recent one", n)
	}
}
