// Package kvbucket opens JetStream key-value buckets that several processes share, whichever
// of them starts first, and keeps a live view of one following its watch (Drain,
// ReloadOnReconnect). It depends on nats.go alone, so domain packages may use what builds on
// it (internal/platform/privacy) without pulling in the event stream's generated messages.
package kvbucket

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
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

// Drain applies w's changes to apply until ctx ends, w does, or a value arrives on reload (a
// live view's request to watch again). A nil entry (the watch's "initial values done" marker)
// is skipped; deleted says the key was deleted or purged.
func Drain(ctx context.Context, w jetstream.KeyWatcher, reload <-chan struct{}, apply func(key string, value []byte, deleted bool)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e != nil {
				apply(e.Key(), e.Value(), e.Operation() != jetstream.KeyValuePut)
			}
		}
	}
}

// ReloadOnReconnect calls reload each time nc reconnects to NATS, until ctx ends: after a NATS
// restart a watch's consumer is gone, and a view that watches again on reload finds out in
// about a second instead of nats.go's 10-20 s.
func ReloadOnReconnect(ctx context.Context, nc *nats.Conn, reload func()) {
	ch := nc.StatusChanged(nats.CONNECTED) // the connection is connected already: each is a reconnect
	go func() {
		defer nc.RemoveStatusListener(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-ch:
				if !ok {
					return
				}
				reload()
			}
		}
	}()
}
