package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/services/billing"
)

// The QUOTAS bucket (internal/platform/quota, helper Q's, once merged: its OpenBucket, Publish
// and Delete replace these): key quota.<tenant>, the tenant's quotas as JSON; a deleted key is
// a tenant without quotas.
const (
	QuotaBucket    = "QUOTAS"
	quotaKeyPrefix = "quota."
)

// QuotaPublisher implements billing.QuotaPublisher on the QUOTAS bucket.
type QuotaPublisher struct{ kv jetstream.KeyValue }

var _ billing.QuotaPublisher = (*QuotaPublisher)(nil)

// OpenQuotaPublisher creates the bucket when missing (one revision per key, on disk).
func OpenQuotaPublisher(ctx context.Context, js jetstream.JetStream) (*QuotaPublisher, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: QuotaBucket, Description: "tenants' quotas and usage, published by billing", History: 1, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", QuotaBucket, err)
	}
	return &QuotaPublisher{kv: kv}, nil
}

type quotaJSON struct {
	Meter    string `json:"meter"`
	Limit    int64  `json:"limit"`
	Hard     bool   `json:"hard"`
	Period   string `json:"period"`
	Used     int64  `json:"used"`
	ResetsAt string `json:"resets_at"`
}

type quotasJSON struct {
	AsOf   string      `json:"as_of"`
	Quotas []quotaJSON `json:"quotas"`
}

// PublishQuotas implements billing.QuotaPublisher: the plan's JSON
// {"as_of": RFC 3339 nano, "quotas": [{"meter","limit","hard","period","used","resets_at": RFC 3339}]};
// no quotas deletes the key.
func (p *QuotaPublisher) PublishQuotas(ctx context.Context, tenantID string, q billing.Quotas) error {
	if len(q.Quotas) == 0 {
		if err := p.kv.Delete(ctx, quotaKeyPrefix+tenantID); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("remove quotas: %w", err)
		}
		return nil
	}
	out := quotasJSON{AsOf: q.AsOf.UTC().Format(time.RFC3339Nano), Quotas: make([]quotaJSON, len(q.Quotas))}
	for i, x := range q.Quotas {
		out.Quotas[i] = quotaJSON{Meter: string(x.Meter), Limit: x.Limit, Hard: x.Hard, Period: string(x.Period), Used: x.Used,
			ResetsAt: x.ResetsAt.UTC().Format(time.RFC3339)}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("encode quotas: %w", err)
	}
	if _, err := p.kv.Put(ctx, quotaKeyPrefix+tenantID, b); err != nil {
		return fmt.Errorf("publish quotas: %w", err)
	}
	return nil
}
