package ingest

import (
	"context"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// TailLimits bound the live event debugger: a tail costs ingest nothing but a non-blocking
// channel send per outcome, and only while someone tails the tenant.
type TailLimits struct {
	PerSecond   int           // outcomes a stream receives per second; the rest are dropped and counted
	MaxDuration time.Duration // a stream ends after this long (the caller reconnects)
	PerTenant   int           // concurrent tails of one tenant
	// A tail starts with the tenant's most recent outcomes: at most History of them (0: none),
	// of the last HistoryAge, gathered from every instance for HistoryWait. Each instance keeps
	// the requests that hold them within HistoryBytes across tenants (counted at their size on
	// the wire); over that, the tenants that sent least recently lose theirs first. Decoded,
	// a request takes about 6 times its wire size in memory (measured: 100 events of 5
	// properties), 12 times with 100 one-letter properties, at most about 37 times (lists of
	// empty values, the worst shape): with the default 4 MiB, 25 MB, 50 MB and 150 MB.
	History      int
	HistoryAge   time.Duration
	HistoryBytes int
	HistoryWait  time.Duration
}

// DefaultTailLimits are the documented defaults.
var DefaultTailLimits = TailLimits{PerSecond: 100, MaxDuration: 30 * time.Minute, PerTenant: 5,
	History: 100, HistoryAge: 10 * time.Minute, HistoryBytes: 4 << 20, HistoryWait: 250 * time.Millisecond}

// TailSink takes the outcomes ingest decides for the tails of their tenant: Tails on one
// instance, the NATS relay (services/ingest/natsjs) across instances.
type TailSink interface {
	// Watching reports whether a tail of tenant is open: outcomes are built only then.
	Watching(tenant string) bool
	// Publish offers the outcomes of one request of tenant, without waiting.
	Publish(tenant string, outs []*TailOutcome)
	// Record keeps the outcomes of one request of tenant for the tails opened later (their
	// recent history), whether or not anyone tails it now; it must be cheap.
	Record(tenant string, r *RequestOutcomes)
}

// TailSource opens and closes tails: Tails on one instance, the NATS relay across instances.
type TailSource interface {
	Open(tenant string) (*Tail, error)
	Close(tl *Tail)
	Limits() TailLimits
	// Recent gathers tenant's recent outcomes recorded by every instance (at most
	// Limits().History of each, unordered across instances), for Service.Recent.
	Recent(ctx context.Context, tenant string) []*TailOutcome
}

// TailOutcome is one outcome a tail receives.
type TailOutcome = ingestv1.TailEventsResponse

// Tails fans the outcomes ingest decides out to the open tails of their tenant, on this
// instance. Publishing never blocks: a tail that cannot keep up (or is over its rate) misses
// outcomes and is told how many.
type Tails struct {
	limits  TailLimits
	now     func() time.Time
	mu      sync.RWMutex
	open    map[string]map[*Tail]struct{}
	history *history
}

// NewTails returns the tails registry under limits.
func NewTails(limits TailLimits) *Tails {
	return &Tails{limits: limits, now: time.Now, open: map[string]map[*Tail]struct{}{}, history: newHistory(limits)}
}

// Limits answers the registry's limits.
func (t *Tails) Limits() TailLimits { return t.limits }

// Tail is one open stream of a tenant's outcomes.
type Tail struct {
	tenant string
	c      chan *ingestv1.TailEventsResponse
	mu     sync.Mutex // guards the rate window and dropped
	window time.Time
	sent   int
	// dropped counts outcomes not delivered since the last one that was.
	dropped int64
	// recent are the keys of the recent outcomes sent first (Service.Recent), which the live
	// ones may repeat; only the reader touches it.
	recent map[string]struct{}
}

// Tenant answers the tenant tl tails.
func (tl *Tail) Tenant() string { return tl.tenant }

// Outcomes delivers the tail's outcomes; a DROPPED marker precedes an outcome that follows a gap.
func (tl *Tail) Outcomes() <-chan *ingestv1.TailEventsResponse { return tl.c }

// Open starts a tail of tenant; RESOURCE_EXHAUSTED when the tenant already has its maximum.
func (t *Tails) Open(tenant string) (*Tail, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.open[tenant]) >= t.limits.PerTenant {
		return nil, apperr.New(apperr.ResourceExhausted, "TOO_MANY_TAILS", "too many open event tails for this tenant; close one and retry")
	}
	if t.open[tenant] == nil {
		t.open[tenant] = map[*Tail]struct{}{}
	}
	// The buffer holds one second's worth plus a marker: a reader that keeps up never drops.
	tl := &Tail{tenant: tenant, c: make(chan *ingestv1.TailEventsResponse, t.limits.PerSecond+1)}
	t.open[tenant][tl] = struct{}{}
	return tl, nil
}

// Close ends tl: no more outcomes are sent to it.
func (t *Tails) Close(tl *Tail) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.open[tl.tenant], tl)
	if len(t.open[tl.tenant]) == 0 {
		delete(t.open, tl.tenant)
	}
}

// Watching reports whether anyone tails tenant: ingest builds outcomes only then.
func (t *Tails) Watching(tenant string) bool {
	if t == nil {
		return false
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.open[tenant]) > 0
}

// Publish offers outs to every tail of tenant, without waiting.
func (t *Tails) Publish(tenant string, outs []*ingestv1.TailEventsResponse) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	now := t.now()
	for tl := range t.open[tenant] {
		for _, o := range outs {
			tl.offer(o, now, t.limits.PerSecond)
		}
	}
}

func (tl *Tail) offer(o *ingestv1.TailEventsResponse, now time.Time, perSecond int) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if now.Sub(tl.window) >= time.Second {
		tl.window, tl.sent = now, 0
	}
	if tl.sent >= perSecond {
		tl.dropped++
		return
	}
	if tl.dropped > 0 {
		// The marker needs room for itself and the outcome after it.
		if cap(tl.c)-len(tl.c) < 2 {
			tl.dropped++
			return
		}
		tl.c <- &ingestv1.TailEventsResponse{Outcome: ingestv1.EventOutcome_EVENT_OUTCOME_DROPPED, Time: timestamppb.New(now), Dropped: tl.dropped}
		tl.dropped = 0
	}
	select {
	case tl.c <- o:
		tl.sent++
	default:
		tl.dropped++
	}
}
