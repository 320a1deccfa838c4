package natsjs

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/kvbucket"
	"github.com/campaignmesh/campaignmesh/services/ingest"
)

// TailBucket is the key-value bucket in which an ingest instance with an open tail of a
// tenant keeps the key tail.<tenant> alive (refreshed every third of TailKeyTTL); every
// instance watches it and publishes a tenant's outcomes only while its key lives. It is on
// file: a bucket in memory would be gone after a NATS restart, and every put with it.
const TailBucket = "DEBUG_TAILS"

// TailKeyTTL is how long a tail key lives unrefreshed: outcomes go on being published for at
// most this long after the last tail of a tenant closed (to nobody: core NATS drops them).
const TailKeyTTL = 30 * time.Second

// TailSubject is the core NATS subject of tenant's outcomes: no stream stores it.
func TailSubject(tenant string) string { return "debug.events." + tenant }

// TailRelay is the live event debugger across ingest instances: every instance publishes the
// outcomes of the tenants someone tails on core NATS, and the instance serving a tail
// subscribes and hands them to its local Tails. When nobody tails, the cost to ingest is one
// map look-up per request.
type TailRelay struct {
	nc    *nats.Conn
	kv    jetstream.KeyValue
	local *ingest.Tails
	ttl   time.Duration

	mu   sync.RWMutex
	live map[string]time.Time // tenant → when its key was last heard of
	open map[string]*relayed  // tenants tailed on this instance
}

type relayed struct {
	tails int
	sub   *nats.Subscription
	stop  context.CancelFunc
}

var (
	_ ingest.TailSink   = (*TailRelay)(nil)
	_ ingest.TailSource = (*TailRelay)(nil)
)

// OpenTailRelay creates or opens TailBucket and watches it until ctx ends.
func OpenTailRelay(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, local *ingest.Tails) (*TailRelay, error) {
	kv, err := kvbucket.Open(ctx, js, jetstream.KeyValueConfig{Bucket: TailBucket, TTL: TailKeyTTL, Storage: jetstream.FileStorage,
		Description: "ingest instances with an open live event tail, by tenant"})
	if err != nil {
		return nil, err
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch bucket %s: %w", TailBucket, err)
	}
	r := &TailRelay{nc: nc, kv: kv, local: local, ttl: TailKeyTTL, live: map[string]time.Time{}, open: map[string]*relayed{}}
	go func() {
		defer w.Stop() //nolint:errcheck // the watch ends with ctx
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					r.heard(strings.TrimPrefix(e.Key(), "tail."))
				}
			}
		}
	}()
	return r, nil
}

func (r *TailRelay) heard(tenant string) {
	r.mu.Lock()
	r.live[tenant] = time.Now()
	r.mu.Unlock()
}

// Watching implements ingest.TailSink: a tail key of tenant was heard of within its TTL.
// A read lock: every request of every tenant asks, concurrently.
func (r *TailRelay) Watching(tenant string) bool {
	r.mu.RLock()
	at, ok := r.live[tenant]
	r.mu.RUnlock()
	return ok && time.Since(at) < r.ttl
}

// Publish implements ingest.TailSink: one core NATS message per request, buffered by the
// client (never waits for the server); a message that cannot be sent is lost to the tails.
func (r *TailRelay) Publish(tenant string, outs []*ingest.TailOutcome) {
	b, err := proto.Marshal(&ingestv1.TailOutcomes{Outcomes: outs})
	if err != nil {
		return
	}
	_ = r.nc.Publish(TailSubject(tenant), b) // best effort by design: a debugger, never a reason to fail ingest
}

// Limits implements ingest.TailSource.
func (r *TailRelay) Limits() ingest.TailLimits { return r.local.Limits() }

// Open implements ingest.TailSource: the first tail of tenant on this instance subscribes to
// its subject and keeps its key alive until the last one closes.
func (r *TailRelay) Open(tenant string) (*ingest.Tail, error) {
	tl, err := r.local.Open(tenant)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if o := r.open[tenant]; o != nil {
		o.tails++
		return tl, nil
	}
	sub, err := r.nc.Subscribe(TailSubject(tenant), func(m *nats.Msg) {
		var outs ingestv1.TailOutcomes
		if proto.Unmarshal(m.Data, &outs) == nil {
			r.local.Publish(tenant, outs.GetOutcomes())
		}
	})
	if err != nil {
		r.local.Close(tl)
		return nil, fmt.Errorf("subscribe to %s: %w", TailSubject(tenant), err)
	}
	ctx, stop := context.WithCancel(context.Background())
	r.open[tenant] = &relayed{tails: 1, sub: sub, stop: stop}
	r.live[tenant] = time.Now()
	go r.keepAlive(ctx, tenant)
	return tl, nil
}

// keepAlive puts tenant's key now and every third of its TTL until ctx ends.
func (r *TailRelay) keepAlive(ctx context.Context, tenant string) {
	t := time.NewTicker(r.ttl / 3)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, r.ttl/3)
		_, _ = r.kv.Put(pctx, "tail."+tenant, []byte("open")) // a missed put is retried at the next tick, within the TTL
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close implements ingest.TailSource.
func (r *TailRelay) Close(tl *ingest.Tail) {
	r.local.Close(tl)
	tenant := tl.Tenant()
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.open[tenant]
	if o == nil {
		return
	}
	if o.tails--; o.tails == 0 {
		o.stop()
		_ = o.sub.Unsubscribe()
		delete(r.open, tenant)
	}
}
