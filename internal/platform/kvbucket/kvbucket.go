// Package kvbucket opens JetStream key-value buckets that several processes share, whichever
// of them starts first. It depends on nats.go alone, so domain packages may use what builds on
// it (internal/platform/privacy) without pulling in the event stream's generated messages.
package kvbucket

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Open returns the key-value bucket cfg names, creating it with cfg when missing. Every
// user of a bucket may call it with the same cfg, whoever starts first: no update rights are
// needed to open an existing bucket, and a lost race to create it opens the winner's.
func Open(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open bucket %s: %w", cfg.Bucket, err)
	}
	kv, err = js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, cfg.Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}
