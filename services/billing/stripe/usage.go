package stripe

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/campaignmesh/campaignmesh/services/billing"
)

// Usage reads Stripe's daily totals for the reconciliation (billing.StripeUsage): it maps
// event names to meter ids (ListMeters, asked again when a name is unknown) and reads the
// meter's event summaries per day.
type Usage struct {
	c  *Client
	mu sync.Mutex
	// ids caches event_name → meter id.
	ids map[string]string
}

var _ billing.StripeUsage = (*Usage)(nil)

// NewUsage returns the reconciliation's reader over c.
func NewUsage(c *Client) *Usage { return &Usage{c: c} }

// DailyTotals returns the customer's totals of eventName per UTC day in [start, end). An
// event name without a meter in Stripe holds nothing: no days.
func (u *Usage) DailyTotals(ctx context.Context, eventName, customer string, start, end time.Time) (map[time.Time]int64, error) {
	id, err := u.meterID(ctx, eventName)
	if err != nil || id == "" {
		return nil, err
	}
	sums, err := u.c.MeterEventSummaries(ctx, id, customer, start, end)
	if err != nil {
		return nil, err
	}
	out := make(map[time.Time]int64, len(sums))
	for _, s := range sums {
		out[s.Start.UTC().Truncate(24*time.Hour)] += int64(math.Round(s.Value))
	}
	return out, nil
}

func (u *Usage) meterID(ctx context.Context, eventName string) (string, error) {
	u.mu.Lock()
	id, ok := u.ids[eventName]
	u.mu.Unlock()
	if ok {
		return id, nil
	}
	ids, err := u.c.MeterIDs(ctx)
	if err != nil {
		return "", err
	}
	u.mu.Lock()
	u.ids = ids
	u.mu.Unlock()
	return ids[eventName], nil
}
