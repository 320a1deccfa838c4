package nats

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/quota"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

// QuotaPublisher implements billing.QuotaPublisher on the QUOTAS bucket (internal/platform/quota:
// key quota.<tenant>, the tenant's Snapshot as JSON; a deleted key is a tenant without quotas).
type QuotaPublisher struct{ kv jetstream.KeyValue }

var _ billing.QuotaPublisher = (*QuotaPublisher)(nil)

// OpenQuotaPublisher creates the bucket when missing (billing alone may).
func OpenQuotaPublisher(ctx context.Context, js jetstream.JetStream) (*QuotaPublisher, error) {
	kv, err := quota.OpenBucket(ctx, js)
	if err != nil {
		return nil, err
	}
	return &QuotaPublisher{kv: kv}, nil
}

// PublishQuotas implements billing.QuotaPublisher: no quotas deletes the tenant's key.
func (p *QuotaPublisher) PublishQuotas(ctx context.Context, tenantID string, q billing.Quotas) error {
	if len(q.Quotas) == 0 {
		return quota.Delete(ctx, p.kv, tenantID)
	}
	s := quota.Snapshot{AsOf: q.AsOf, Quotas: make([]quota.Quota, len(q.Quotas))}
	for i, x := range q.Quotas {
		s.Quotas[i] = quota.Quota{Meter: string(x.Meter), Limit: x.Limit, Hard: x.Hard, Period: string(x.Period), Used: x.Used, ResetsAt: x.ResetsAt}
	}
	return quota.Publish(ctx, p.kv, tenantID, s)
}
