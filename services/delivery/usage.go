package delivery

import (
	"context"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/usage"
)

// TenantUsage is one tenant's usage of delivery (billing's GetUsageCounts).
type TenantUsage struct {
	TenantID string
	// MessagesEmail and MessagesSMS count the messages sent on the day, per channel.
	MessagesEmail, MessagesSMS int64
	// ContactsStored is the tenant's contacts now, whatever the day.
	ContactsStored int64
}

// UsageStore counts delivery's usage (postgres.Usage).
type UsageStore interface {
	// UsageCounts returns, by tenant id, every tenant with messages sent in [from, to) or
	// contacts stored: the ledger rows in state sent whose sending attempt was claimed in the
	// range, by their campaign's channel, and the contacts stored now.
	UsageCounts(ctx context.Context, from, to time.Time) ([]TenantUsage, error)
}

// Usage answers billing's GetUsageCounts. A message counts once, on the UTC day its sending
// attempt started (the ledger's attempt_time, which the provider's later webhooks, lookups
// and erasures leave alone), as soon as the provider accepted it (state sent): a message
// whose outcome is unknown counts once a lookup finds it sent, on its attempt's day. Contacts
// are a gauge measured now: the day does not change them.
type Usage struct {
	store UsageStore
	now   func() time.Time
}

// NewUsage returns the usage counts over store.
func NewUsage(store UsageStore) *Usage { return &Usage{store: store, now: time.Now} }

// Counts returns every tenant's usage of the UTC day (YYYY-MM-DD, usage.ParseDay).
func (u *Usage) Counts(ctx context.Context, day string) ([]TenantUsage, error) {
	from, err := usage.ParseDay(day, u.now())
	if err != nil {
		var v apperr.Violations
		v.Add("day", "%s", err.Error())
		return nil, v.Err()
	}
	return u.store.UsageCounts(ctx, from, from.Add(24*time.Hour))
}
