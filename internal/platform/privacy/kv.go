package privacy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/kvbucket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the JetStream key-value bucket dsr publishes privacy state in, and ingest and
// analytics watch:
//
//	policy.<tenant>        the tenant's Policy (JSON)
//	sup.<tenant>.<hash>    a suppressed identifier (its SubjectHash); the value is the dsr
//	                       request that added it
//
// dsr writes after its own database commit and re-writes everything periodically, so the
// bucket converges on dsr's database; a deleted key is a removed suppression.
const Bucket = "PRIVACY"

// PolicyKey is the key of a tenant's policy.
func PolicyKey(tenant string) string { return "policy." + tenant }

// SuppressionKey is the key of a tenant's suppressed identifier hash.
func SuppressionKey(tenant, subjectHash string) string { return "sup." + tenant + "." + subjectHash }

// OpenBucket returns Bucket, creating it when missing (every user of it may: the first to start
// does). It keeps one revision per key, on disk.
func OpenBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	return kvbucket.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "privacy policies and suppression lists, published by dsr",
		History: 1, Storage: jetstream.FileStorage,
	})
}

// View is a live copy of Bucket: the policies and suppression lists of every tenant, kept
// current by a watch (changes arrive within milliseconds of dsr's write). It is safe for
// concurrent use.
type View struct {
	mu        sync.RWMutex
	policies  map[string]Policy
	sup       map[string]map[string]struct{} // tenant -> subject hashes
	lastEvent time.Time
	logger    *slog.Logger
	reload    chan struct{} // Reload's request to follow
}

// NewView returns an empty View; Watch fills it.
func NewView(logger *slog.Logger) *View {
	return &View{policies: map[string]Policy{}, sup: map[string]map[string]struct{}{}, logger: logger, reload: make(chan struct{}, 1)}
}

// Watch loads Bucket into a new View and keeps it current until ctx ends. It returns once the
// bucket's current contents are loaded, so a service that serves after Watch returns never
// applies an empty suppression list by mistake.
//
// Staleness: a change reaches the View within milliseconds while NATS is up. The watch is an
// ordered consumer (nats.go): after a NATS restart or a lost consumer, nats.go notices within
// two missed idle heartbeats (10 s) and recreates it from the last entry seen, so changes made
// meanwhile arrive within about 10-20 s of NATS coming back; ReloadOnReconnect cuts that to
// about a second. Should the watch end instead (its subscription closed), or Reload be called,
// the View loads the bucket again from a new watch, retrying every second up to every
// WatchRetryMax, and swaps the fresh contents in whole (so keys deleted meanwhile go too);
// until then it keeps applying what it last had.
func Watch(ctx context.Context, kv jetstream.KeyValue, logger *slog.Logger) (*View, error) {
	v := NewView(logger)
	w, err := v.load(ctx, kv)
	if err != nil {
		return nil, err
	}
	go v.follow(ctx, kv, w)
	return v, nil
}

// WatchRetryMax bounds the wait between two attempts to watch Bucket again.
const WatchRetryMax = 5 * time.Second

// load watches kv and fills v with its current contents, replacing what v held, and returns
// the watch to follow.
func (v *View) load(ctx context.Context, kv jetstream.KeyValue) (jetstream.KeyWatcher, error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch bucket %s: %w", Bucket, err)
	}
	fresh := NewView(v.logger)
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
				v.mu.Lock()
				v.policies, v.sup, v.lastEvent = fresh.policies, fresh.sup, time.Now()
				v.mu.Unlock()
				return w, nil
			}
			fresh.Apply(e.Key(), e.Value(), e.Operation() != jetstream.KeyValuePut)
		}
	}
}

// follow applies w's changes until ctx ends, watching again whenever w ends.
func (v *View) follow(ctx context.Context, kv jetstream.KeyValue, w jetstream.KeyWatcher) {
	for {
		kvbucket.Drain(ctx, w, v.reload, v.Apply)
		_ = w.Stop()
		if ctx.Err() != nil {
			return
		}
		if v.logger != nil {
			v.logger.Warn("privacy bucket watch ended or reload asked; watching it again", "bucket", Bucket)
		}
		for wait := time.Second; ; wait = min(2*wait, WatchRetryMax) {
			var err error
			if w, err = v.load(ctx, kv); err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			if v.logger != nil {
				v.logger.Error("privacy bucket cannot be watched; applying the last contents seen", "bucket", Bucket, "retry_in", wait, "error", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		if v.logger != nil {
			v.logger.Info("privacy bucket watched again", "bucket", Bucket)
		}
	}
}

// Reload makes a View that Watch follows load the bucket again from a new watch (see Watch),
// at once rather than when nats.go notices its watch is gone.
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

// Apply records one entry of Bucket (deleted: the key was deleted or purged). Watch calls it;
// tests may too.
func (v *View) Apply(key string, value []byte, deleted bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.lastEvent = time.Now()
	switch {
	case strings.HasPrefix(key, "policy."):
		tenant := strings.TrimPrefix(key, "policy.")
		if deleted {
			delete(v.policies, tenant)
			return
		}
		var p Policy
		if err := json.Unmarshal(value, &p); err != nil {
			if v.logger != nil {
				v.logger.Error("privacy policy entry does not decode; keeping the previous one", "tenant", tenant, "error", err)
			}
			return
		}
		if old, ok := v.policies[tenant]; ok && old.Version > p.Version {
			return
		}
		v.policies[tenant] = p
	case strings.HasPrefix(key, "sup."):
		tenant, hash, ok := strings.Cut(strings.TrimPrefix(key, "sup."), ".")
		if !ok {
			return
		}
		set := v.sup[tenant]
		if deleted {
			delete(set, hash)
			return
		}
		if set == nil {
			set = map[string]struct{}{}
			v.sup[tenant] = set
		}
		set[hash] = struct{}{}
	}
}

// Policy returns a tenant's policy (the zero Policy when it has none).
func (v *View) Policy(tenant string) Policy {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.policies[tenant]
}

// Policies returns every tenant's policy that differs from the default.
func (v *View) Policies() map[string]Policy {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make(map[string]Policy, len(v.policies))
	for t, p := range v.policies {
		out[t] = p
	}
	return out
}

// Suppressions returns how many identifiers a tenant has suppressed: callers skip hashing a
// tenant's events when it has none.
func (v *View) Suppressions(tenant string) int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.sup[tenant])
}

// Suppressed reports whether a tenant has suppressed the identifier with this SubjectHash.
func (v *View) Suppressed(tenant, subjectHash string) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	_, ok := v.sup[tenant][subjectHash]
	return ok
}

// PutPolicy publishes a tenant's policy (dsr).
func PutPolicy(ctx context.Context, kv jetstream.KeyValue, tenant string, p Policy) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, PolicyKey(tenant), b); err != nil {
		return fmt.Errorf("publish privacy policy: %w", err)
	}
	return nil
}

// PutSuppression publishes a suppressed identifier hash (dsr); request names the dsr request.
func PutSuppression(ctx context.Context, kv jetstream.KeyValue, tenant, subjectHash, request string) error {
	if _, err := kv.Put(ctx, SuppressionKey(tenant, subjectHash), []byte(request)); err != nil {
		return fmt.Errorf("publish suppression: %w", err)
	}
	return nil
}

// DeleteSuppression removes a suppressed identifier hash (dsr).
func DeleteSuppression(ctx context.Context, kv jetstream.KeyValue, tenant, subjectHash string) error {
	if err := kv.Delete(ctx, SuppressionKey(tenant, subjectHash)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("remove suppression: %w", err)
	}
	return nil
}
