package quota

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/kvbucket"
)

// Bucket is the JetStream key-value bucket billing publishes the tenants' quotas in, and ingest
// and delivery watch:
//
//	quota.<tenant>   the tenant's Snapshot (JSON); a deleted key is a tenant without quotas
//
// billing writes after every usage recompute and right after a plan change.
const Bucket = "QUOTAS"

const keyPrefix = "quota."

// Key is the key of a tenant's snapshot.
func Key(tenant string) string { return keyPrefix + tenant }

// OpenBucket returns Bucket, creating it when missing (billing, the writer). It keeps one
// revision per key, on disk.
func OpenBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	return kvbucket.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "tenants' quotas and usage, published by billing",
		History: 1, Storage: jetstream.FileStorage,
	})
}

// Publish writes a tenant's snapshot (billing).
func Publish(ctx context.Context, kv jetstream.KeyValue, tenant string, s Snapshot) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, Key(tenant), b); err != nil {
		return fmt.Errorf("publish quotas: %w", err)
	}
	return nil
}

// Delete removes a tenant's snapshot: it has no quotas (billing).
func Delete(ctx context.Context, kv jetstream.KeyValue, tenant string) error {
	if err := kv.Delete(ctx, Key(tenant)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("remove quotas: %w", err)
	}
	return nil
}

// WatchRetryMax bounds the wait between two attempts to watch Bucket again.
const WatchRetryMax = 5 * time.Second

// Watch returns a View of Bucket that follows it until ctx ends. It waits up to wait for a first
// attempt to load the bucket's contents; when that fails or takes longer (the bucket does not
// exist yet because billing has not started, or NATS is slow, down or refuses the user), the
// View starts empty — no quotas: every request is allowed — and keeps trying in the background,
// every second up to every WatchRetryMax, logging each failure. Quotas are a commercial limit:
// an enforcing service goes on serving without them rather than refusing everyone.
//
// Staleness: a change reaches the View within milliseconds while NATS is up; after a NATS
// restart, about a second with ReloadOnReconnect, 10-20 s without (the watch's ordered consumer,
// as privacy.Watch). A load swaps in the bucket's whole contents (keys deleted meanwhile go).
// Only ctx's errors are returned.
func Watch(ctx context.Context, js jetstream.JetStream, logger *slog.Logger, wait time.Duration) (*View, error) {
	v := NewView(logger)
	tried := make(chan error, 1)
	go v.follow(ctx, js, tried)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case err := <-tried:
		if err != nil && logger != nil {
			logger.Warn("quota bucket cannot be watched yet; enforcing no quotas until it can", "bucket", Bucket, "error", err)
		}
	case <-timer.C:
		if logger != nil {
			logger.Warn("quota bucket not loaded in time; enforcing no quotas until it is", "bucket", Bucket, "waited", wait)
		}
	}
	return v, nil
}

// load watches the bucket and swaps its current contents into v, and returns the watch to
// follow.
func (v *View) load(ctx context.Context, js jetstream.JetStream) (jetstream.KeyWatcher, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", Bucket, err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch bucket %s: %w", Bucket, err)
	}
	fresh := NewView(nil)
	for {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("watch bucket %s: closed while loading", Bucket)
			}
			if e == nil { // the current contents are loaded
				v.replace(fresh.snaps)
				return w, nil
			}
			fresh.Apply(e.Key(), e.Value(), e.Operation() != jetstream.KeyValuePut)
		}
	}
}

// follow loads the bucket and applies its changes until ctx ends, loading it again whenever
// the watch ends or cannot be had; the outcome of the first load goes to tried.
func (v *View) follow(ctx context.Context, js jetstream.JetStream, tried chan<- error) {
	wait := time.Second
	for {
		w, err := v.load(ctx, js)
		if tried != nil {
			tried <- err
			tried = nil
		}
		if err == nil {
			wait = time.Second
			kvbucket.Drain(ctx, w, v.reload, v.Apply)
			_ = w.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			continue // the watch ended or Reload was called: load again at once
		}
		if v.logger != nil {
			// Once per outage at WARN (billing may not run at all): the retries at DEBUG.
			level := slog.LevelDebug
			if wait == time.Second {
				level = slog.LevelWarn
			}
			v.logger.Log(ctx, level, "quota bucket cannot be watched; applying the last contents seen", "bucket", Bucket, "retry_in", wait, "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-v.reload:
		case <-time.After(wait):
		}
		wait = min(2*wait, WatchRetryMax)
	}
}

// Reload makes a View that Watch follows load the bucket again from a new watch, at once.
func (v *View) Reload() {
	select {
	case v.reload <- struct{}{}:
	default: // one is pending already
	}
}

// ReloadOnReconnect calls v.Reload each time nc reconnects to NATS, until ctx ends
// (kvbucket.ReloadOnReconnect).
func ReloadOnReconnect(ctx context.Context, nc *nats.Conn, v *View) {
	kvbucket.ReloadOnReconnect(ctx, nc, v.Reload)
}
