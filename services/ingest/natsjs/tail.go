package natsjs

import (
	"context"
	"crypto/rand"
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

// HistorySubject is the core NATS subject on which an instance opening a tail of tenant asks
// the other instances for the tenant's recent outcomes; each answers on the request's reply
// subject with TailOutcomes messages (none when it has nothing), each within the server's
// payload limit, and from then on publishes the tenant's outcomes on TailSubject as if it had
// heard of the tail's key.
func HistorySubject(tenant string) string { return "debug.history." + tenant }

// HistoryAnswers is the most messages an instance answers a HistorySubject request with (the
// allow_responses bound of deploy/nats.conf): with the default limits an answer takes four at
// most (100 events of 32 KiB in 1 MiB messages).
const HistoryAnswers = 8

// TailRelay is the live event debugger across ingest instances: every instance publishes the
// outcomes of the tenants someone tails on core NATS, and the instance serving a tail
// subscribes and hands them to its local Tails; a tail opening gathers every instance's
// recent outcomes of its tenant (HistorySubject). When nobody tails, the cost to ingest is
// one map look-up per request and the local history's record.
type TailRelay struct {
	id    string // tells this instance's history requests from the others'
	nc    *nats.Conn
	kv    jetstream.KeyValue
	local *ingest.Tails
	ttl   time.Duration

	mu   sync.RWMutex
	live map[string]time.Time // tenant → when its key was last heard of
	open map[string]*relayed  // tenants tailed on this instance
}

type relayed struct {
	tails   int
	sub     *nats.Subscription
	stop    context.CancelFunc
	refresh chan struct{} // put the key now
}

var (
	_ ingest.TailSink   = (*TailRelay)(nil)
	_ ingest.TailSource = (*TailRelay)(nil)
)

// OpenTailRelay creates or opens TailBucket and watches it until ctx ends.
//
// NATS restarts: the subscriptions (debug.events.<tenant>, debug.history.*) are made again by
// nats.go when it reconnects, but the bucket's watch is a consumer the restart took away, which
// nats.go notices only after two missed heartbeats (10-20 s): meanwhile no tail opened
// elsewhere would be heard of. So on every reconnect the relay watches the bucket again at
// once (retrying every second up to WatchRetryMax while JetStream is not back yet), and puts
// the keys of the tails open on this instance at once instead of at their next refresh. A
// watch that ends by itself is replaced the same way.
func OpenTailRelay(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, local *ingest.Tails) (*TailRelay, error) {
	kv, err := kvbucket.Open(ctx, js, jetstream.KeyValueConfig{Bucket: TailBucket, TTL: TailKeyTTL, Storage: jetstream.FileStorage,
		Description: "ingest instances with an open live event tail, by tenant"})
	if err != nil {
		return nil, err
	}
	// Listening before the watch starts: a reconnect in between is not missed.
	reconnects := nc.StatusChanged(nats.CONNECTED) // connected already: each is a reconnect
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		nc.RemoveStatusListener(reconnects)
		return nil, fmt.Errorf("watch bucket %s: %w", TailBucket, err)
	}
	r := &TailRelay{nc: nc, kv: kv, local: local, ttl: TailKeyTTL, live: map[string]time.Time{}, open: map[string]*relayed{}, id: rand.Text()}
	hist, err := nc.Subscribe(HistorySubject("*"), r.answerHistory)
	if err != nil {
		_ = w.Stop()
		nc.RemoveStatusListener(reconnects)
		return nil, fmt.Errorf("subscribe to %s: %w", HistorySubject("*"), err)
	}
	context.AfterFunc(ctx, func() { _ = hist.Unsubscribe() })
	go r.follow(ctx, w, reconnects)
	return r, nil
}

// WatchRetryMax bounds the wait between two attempts to watch TailBucket again.
const WatchRetryMax = 5 * time.Second

// follow hears of the tail keys w delivers until ctx ends, watching again after a reconnect
// or when w ends.
func (r *TailRelay) follow(ctx context.Context, w jetstream.KeyWatcher, reconnects chan nats.Status) {
	defer r.nc.RemoveStatusListener(reconnects)
	for {
		if !r.drain(ctx, w, reconnects) {
			_ = w.Stop()
			return
		}
		_ = w.Stop()
		for wait := time.Second; ; wait = min(2*wait, WatchRetryMax) {
			var err error
			if w, err = r.kv.WatchAll(ctx, jetstream.IgnoreDeletes()); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}
}

// drain hears of w's keys until ctx ends (false) or w should be replaced: NATS reconnected
// (the keys of this instance's tails are put again at once) or w ended.
func (r *TailRelay) drain(ctx context.Context, w jetstream.KeyWatcher, reconnects chan nats.Status) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-reconnects:
			r.refreshKeys()
			return true
		case e, ok := <-w.Updates():
			if !ok {
				return true
			}
			if e != nil {
				r.heard(strings.TrimPrefix(e.Key(), "tail."))
			}
		}
	}
}

// refreshKeys has the keep-alive of every tenant tailed on this instance put its key now.
func (r *TailRelay) refreshKeys() {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, o := range r.open {
		select {
		case o.refresh <- struct{}{}:
		default: // one is pending already
		}
	}
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

// Record implements ingest.TailSink: the local history keeps the request's outcomes.
func (r *TailRelay) Record(tenant string, o *ingest.RequestOutcomes) { r.local.Record(tenant, o) }

// answerHistory answers a HistorySubject request with the local recent outcomes of its
// tenant. The tenant counts as tailed first: an outcome recorded after the answer is published
// (ingest.Service records, then asks Watching), one recorded before is in it.
func (r *TailRelay) answerHistory(m *nats.Msg) {
	tenant := strings.TrimPrefix(m.Subject, HistorySubject(""))
	if m.Reply == "" || tenant == "" || m.Header.Get(historyFrom) == r.id {
		return // this instance's own request: Recent has its history already
	}
	r.heard(tenant)
	outs := r.local.Recent(context.Background(), tenant)
	// An outcome is at most an event (MaxEventBytes) and a few fields: far below the limit.
	limit := int(r.nc.MaxPayload()) - 1024
	var chunks []*ingestv1.TailOutcomes
	size := limit
	for _, o := range outs {
		n := proto.Size(o) + 8 // the field's tag and length
		if size+n > limit {
			chunks = append(chunks, &ingestv1.TailOutcomes{})
			size = 0
		}
		c := chunks[len(chunks)-1]
		c.Outcomes = append(c.Outcomes, o)
		size += n
	}
	// The newest answers only, as many as the server lets an instance send.
	for _, c := range chunks[max(0, len(chunks)-HistoryAnswers):] {
		r.respond(m, c)
	}
}

func (r *TailRelay) respond(m *nats.Msg, outs *ingestv1.TailOutcomes) {
	b, err := proto.Marshal(outs)
	if err != nil {
		return
	}
	_ = m.Respond(b) // best effort: a lost answer leaves that instance's history out
}

// historyFrom is the header of a HistorySubject request naming the instance that asks.
const historyFrom = "Ingest-Instance"

// Recent implements ingest.TailSource: this instance's recent outcomes of tenant, and those
// of the other instances that answer within HistoryWait.
func (r *TailRelay) Recent(ctx context.Context, tenant string) []*ingest.TailOutcome {
	limits := r.local.Limits()
	if limits.History <= 0 {
		return nil
	}
	// The local ones directly: they never miss the wait. The tail is open (Watching) already,
	// so what is recorded from now on goes out live.
	out := r.local.Recent(ctx, tenant)
	inbox := r.nc.NewInbox()
	answers := make(chan *nats.Msg, 64)
	sub, err := r.nc.ChanSubscribe(inbox, answers)
	if err != nil {
		return out
	}
	defer sub.Unsubscribe() //nolint:errcheck // the inbox is this call's alone
	req := &nats.Msg{Subject: HistorySubject(tenant), Reply: inbox, Header: nats.Header{historyFrom: []string{r.id}}}
	if err := r.nc.PublishMsg(req); err != nil {
		return out
	}
	wait := time.NewTimer(limits.HistoryWait)
	defer wait.Stop()
	// Bounded like the answers: every instance sends at most History outcomes.
	for len(out) < 64*limits.History {
		select {
		case <-ctx.Done():
			return out
		case <-wait.C:
			return out
		case m := <-answers:
			var outs ingestv1.TailOutcomes
			if proto.Unmarshal(m.Data, &outs) == nil {
				out = append(out, outs.GetOutcomes()...)
			}
		}
	}
	return out
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
	o := &relayed{tails: 1, sub: sub, stop: stop, refresh: make(chan struct{}, 1)}
	r.open[tenant] = o
	r.live[tenant] = time.Now()
	go r.keepAlive(ctx, tenant, o.refresh)
	return tl, nil
}

// keepAlive puts tenant's key now, every third of its TTL and when asked on refresh, until
// ctx ends.
func (r *TailRelay) keepAlive(ctx context.Context, tenant string, refresh <-chan struct{}) {
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
		case <-refresh:
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
