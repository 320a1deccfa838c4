// Package natskv implements the dsr domain's Publisher with the PRIVACY key-value bucket on
// NATS JetStream (internal/platform/privacy), which ingest and analytics watch.
package natskv

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/services/dsr"
)

// Bucket is a dsr.Publisher.
type Bucket struct{ kv jetstream.KeyValue }

var _ dsr.Publisher = (*Bucket)(nil)

// Open opens (creating when missing) the PRIVACY bucket.
func Open(ctx context.Context, js jetstream.JetStream) (*Bucket, error) {
	kv, err := privacy.OpenBucket(ctx, js)
	if err != nil {
		return nil, err
	}
	return &Bucket{kv: kv}, nil
}

// PutSuppression implements dsr.Publisher.
func (b *Bucket) PutSuppression(ctx context.Context, tenantID, hash, requestID string) error {
	return privacy.PutSuppression(ctx, b.kv, tenantID, hash, requestID)
}

// DeleteSuppression implements dsr.Publisher.
func (b *Bucket) DeleteSuppression(ctx context.Context, tenantID, hash string) error {
	return privacy.DeleteSuppression(ctx, b.kv, tenantID, hash)
}

// PutPolicy implements dsr.Publisher.
func (b *Bucket) PutPolicy(ctx context.Context, tenantID string, p privacy.Policy) error {
	return privacy.PutPolicy(ctx, b.kv, tenantID, p)
}

// SuppressionKeys implements dsr.Publisher.
func (b *Bucket) SuppressionKeys(ctx context.Context, fn func(tenantID, hash string)) error {
	keys, err := b.kv.ListKeysFiltered(ctx, "sup.>")
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list suppression keys: %w", err)
	}
	defer func() { _ = keys.Stop() }()
	for k := range keys.Keys() {
		tenant, hash, ok := strings.Cut(strings.TrimPrefix(k, "sup."), ".")
		if ok {
			fn(tenant, hash)
		}
	}
	return nil
}
