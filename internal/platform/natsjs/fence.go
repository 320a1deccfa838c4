package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/kvbucket"
	"github.com/nats-io/nats.go/jetstream"
)

// FenceBucket is the key-value bucket of the tenant write fences an analytics erasure raises
// around its rebuild of rollup hours (services/analytics/writer, "Write fences"):
//
//	fence.<tenant>        a raised fence: {"id": the erasure batch, "time_ms": last refresh}
//	ack.<tenant>.w<i>     writer i's acknowledgement: the fence id it has seen, with none of
//	                      its inserts in flight and none of the tenant's to come until the lift
//
// Tenant ids are subject tokens (they name the event subjects events.<tenant>.<p>), so they
// are valid keys.
const FenceBucket = "EVENTS_FENCES"

// FenceMaxAge bounds a fence that is no longer refreshed: a writer ignores a fence whose last
// refresh is older, logging loudly, so a crashed or stuck erasure never blocks a tenant's
// events for longer. The raiser refreshes it every FenceRefresh while it holds it.
const (
	FenceMaxAge  = 3 * time.Minute
	FenceRefresh = 30 * time.Second
)

// Fence is the value of a raised fence.
type Fence struct {
	// ID names the erasure batch that raised it; writers acknowledge this id.
	ID string `json:"id"`
	// TimeMS is the raiser's last refresh, Unix milliseconds.
	TimeMS int64 `json:"time_ms"`
}

// Stale tells whether f was last refreshed more than FenceMaxAge before now.
func (f Fence) Stale(now time.Time) bool {
	return now.Sub(time.UnixMilli(f.TimeMS)) > FenceMaxAge
}

// FenceKey is the key of tenant's fence.
func FenceKey(tenant string) string { return "fence." + tenant }

// FenceAckKey is the key of writer index's acknowledgement of tenant's fence.
func FenceAckKey(tenant string, index int) string {
	return "ack." + tenant + ".w" + strconv.Itoa(index)
}

// OpenFenceBucket returns FenceBucket, creating it when missing (the writers and the erasure
// create it alike, with the same configuration). One revision per key, on disk.
func OpenFenceBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	return kvbucket.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket: FenceBucket, Description: "analytics tenant write fences: fence.<tenant> raised by an erasure, ack.<tenant>.w<i> by writer i",
		History: 1, Storage: jetstream.FileStorage,
	})
}

// FenceView is a writer's live copy of the raised fences, kept current by a watch of
// FenceBucket. It is safe for concurrent use.
type FenceView struct {
	mu     sync.Mutex
	fences map[string]Fence // by tenant
}

// WatchFences loads the raised fences of kv and keeps the view current until ctx ends. It
// returns once the current fences are loaded: a writer that starts consuming after it returns
// never misses a fence raised before.
func WatchFences(ctx context.Context, kv jetstream.KeyValue, logger *slog.Logger) (*FenceView, error) {
	v := &FenceView{fences: map[string]Fence{}}
	w, err := kv.Watch(ctx, "fence.>")
	if err != nil {
		return nil, fmt.Errorf("watch bucket %s: %w", FenceBucket, err)
	}
	for {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("watch bucket %s: closed while loading", FenceBucket)
			}
			if e == nil { // loaded
				go v.follow(ctx, w, logger)
				return v, nil
			}
			v.apply(e, logger)
		}
	}
}

func (v *FenceView) follow(ctx context.Context, w jetstream.KeyWatcher, logger *slog.Logger) {
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e != nil {
				v.apply(e, logger)
			}
		}
	}
}

func (v *FenceView) apply(e jetstream.KeyValueEntry, logger *slog.Logger) {
	tenant := strings.TrimPrefix(e.Key(), "fence.")
	v.mu.Lock()
	defer v.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(v.fences, tenant)
		return
	}
	var f Fence
	if err := json.Unmarshal(e.Value(), &f); err != nil || f.ID == "" {
		// A fence that does not decode is ignored: blocking a tenant on it could be forever.
		logger.Error("write fence does not decode; ignoring it", "tenant", tenant, "err", err)
		delete(v.fences, tenant)
		return
	}
	v.fences[tenant] = f
}

// Fences returns a copy of the raised fences by tenant, stale ones included (Fence.Stale).
func (v *FenceView) Fences() map[string]Fence {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[string]Fence, len(v.fences))
	for t, f := range v.fences {
		out[t] = f
	}
	return out
}

// Fencer raises and lifts tenant write fences for an erasure: it implements
// services/analytics' Fence port over FenceBucket, waiting for the acknowledgements of the
// writers whose leases (WriterLeaseBucket) are live.
type Fencer struct {
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	poll time.Duration

	mu      sync.Mutex
	holding map[string]chan struct{} // fence id -> stops its refresh
}

// NewFencer opens FenceBucket (creating it when missing) for raising fences.
func NewFencer(ctx context.Context, js jetstream.JetStream) (*Fencer, error) {
	kv, err := OpenFenceBucket(ctx, js)
	if err != nil {
		return nil, err
	}
	return &Fencer{js: js, kv: kv, poll: 50 * time.Millisecond, holding: map[string]chan struct{}{}}, nil
}

// Raise raises fence id on tenants and returns once every writer that holds a live lease has
// acknowledged it on each: from then on no writer inserts those tenants' events until Lift.
// It keeps the fences refreshed until Lift. When it fails (ctx ends first), the caller must
// still Lift: some fences may be up.
func (f *Fencer) Raise(ctx context.Context, id string, tenants []string) error {
	if err := f.put(ctx, id, tenants); err != nil {
		return err
	}
	stop := make(chan struct{})
	f.mu.Lock()
	if old, ok := f.holding[id]; ok {
		close(old)
	}
	f.holding[id] = stop
	f.mu.Unlock()
	go f.refresh(id, tenants, stop)
	return f.awaitAcks(ctx, id, tenants)
}

func (f *Fencer) put(ctx context.Context, id string, tenants []string) error {
	value, err := json.Marshal(Fence{ID: id, TimeMS: time.Now().UnixMilli()})
	if err != nil {
		return err
	}
	for _, t := range tenants {
		if _, err := f.kv.Put(ctx, FenceKey(t), value); err != nil {
			return fmt.Errorf("raise the write fence of tenant %s: %w", t, err)
		}
	}
	return nil
}

// refresh rewrites the fences every FenceRefresh until stop, so writers do not take them for
// stale while the erasure works.
func (f *Fencer) refresh(id string, tenants []string, stop chan struct{}) {
	tick := time.NewTicker(FenceRefresh)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), FenceRefresh/2)
			_ = f.put(ctx, id, tenants) // a failed refresh is tried again at the next tick
			cancel()
		}
	}
}

// awaitAcks waits until, for each tenant, every live writer index has acknowledged id. A
// writer whose lease lapses meanwhile (it died) is no longer waited for: its successor reads
// the fences before it consumes.
func (f *Fencer) awaitAcks(ctx context.Context, id string, tenants []string) error {
	leases, err := f.js.KeyValue(ctx, WriterLeaseBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil // no writer has ever run
	}
	if err != nil {
		return fmt.Errorf("open bucket %s: %w", WriterLeaseBucket, err)
	}
	for {
		missing := 0
		for i := range MaxWriters {
			if _, err := leases.Get(ctx, "w"+strconv.Itoa(i)); errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			} else if err != nil {
				return fmt.Errorf("read writer lease %d: %w", i, err)
			}
			for _, t := range tenants {
				e, err := f.kv.Get(ctx, FenceAckKey(t, i))
				switch {
				case errors.Is(err, jetstream.ErrKeyNotFound):
					missing++
				case err != nil:
					return fmt.Errorf("read writer %d's fence acknowledgement: %w", i, err)
				case string(e.Value()) != id:
					missing++
				}
			}
		}
		if missing == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the writers to acknowledge the write fence (%d acknowledgements missing): %w", missing, ctx.Err())
		case <-time.After(f.poll):
		}
	}
}

// Lift lifts fence id from tenants and deletes the writers' acknowledgements. It is safe to
// call for fences never raised.
func (f *Fencer) Lift(ctx context.Context, id string, tenants []string) error {
	f.mu.Lock()
	if stop, ok := f.holding[id]; ok {
		close(stop)
		delete(f.holding, id)
	}
	f.mu.Unlock()
	var errs []error
	for _, t := range tenants {
		if err := f.kv.Delete(ctx, FenceKey(t)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			errs = append(errs, fmt.Errorf("lift the write fence of tenant %s: %w", t, err))
		}
		for i := range MaxWriters {
			if err := f.kv.Delete(ctx, FenceAckKey(t, i)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				errs = append(errs, fmt.Errorf("delete writer %d's fence acknowledgement: %w", i, err))
			}
		}
	}
	return errors.Join(errs...)
}

// AckFence records that writer index has seen fence id of tenant, with none of its inserts
// in flight.
func AckFence(ctx context.Context, kv jetstream.KeyValue, tenant string, index int, id string) error {
	if _, err := kv.Put(ctx, FenceAckKey(tenant, index), []byte(id)); err != nil {
		return fmt.Errorf("acknowledge the write fence of tenant %s: %w", tenant, err)
	}
	return nil
}
