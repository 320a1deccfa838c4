// Package ratelimit is the one keyed token-bucket limiter of the mesh: the gateway keys it by
// client IP, ingest by tenant and by source (API key or user). Each key gets a bucket refilled
// at Rate per second holding at most Burst tokens. Memory is bounded: buckets idle for longer
// than it takes them to refill are dropped (a fresh bucket is full, so dropping one changes no
// answer), and past MaxKeys the idle ones go first.
package ratelimit

import (
	"hash/maphash"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys bounds the buckets a limiter keeps when the config does not.
const DefaultMaxKeys = 100_000

const shards = 16

// Config is the limit of every key.
type Config struct {
	// Rate is the tokens added per second.
	Rate float64
	// Burst is the most tokens a bucket holds (and so the most one call may take).
	Burst int
	// MaxKeys bounds the buckets kept (default DefaultMaxKeys).
	MaxKeys int
}

// PerWindow is the config allowing n per window, all of it at once if the bucket is full.
func PerWindow(n int, window time.Duration) Config {
	return Config{Rate: float64(n) / window.Seconds(), Burst: n}
}

// Keyed is a set of token buckets, one per key. It is safe for concurrent use.
type Keyed struct {
	cfg    Config
	idle   time.Duration
	seed   maphash.Seed
	shards [shards]shard
	now    func() time.Time
}

type shard struct {
	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// New returns a limiter with cfg for every key.
func New(cfg Config) *Keyed {
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	// A bucket untouched for this long has refilled completely: forgetting it is invisible.
	idle := time.Second
	if cfg.Rate > 0 {
		idle = max(idle, time.Duration(math.Ceil(float64(cfg.Burst)/cfg.Rate*float64(time.Second))))
	}
	k := &Keyed{cfg: cfg, idle: idle, seed: maphash.MakeSeed(), now: time.Now}
	for i := range k.shards {
		k.shards[i].buckets = map[string]*bucket{}
	}
	return k
}

// Allow takes n tokens from key's bucket. When they are not there it takes none and says how
// long until they would be (at least a millisecond; a second when n exceeds the burst).
func (k *Keyed) Allow(key string, n int) (bool, time.Duration) {
	now := k.now()
	s := &k.shards[maphash.String(k.seed, key)%shards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.lastSweep) > k.idle || len(s.buckets) >= k.cfg.MaxKeys/shards+1 {
		s.sweep(now, k.idle, k.cfg.MaxKeys/shards+1)
	}
	b, ok := s.buckets[key]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(rate.Limit(k.cfg.Rate), k.cfg.Burst)}
		s.buckets[key] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, n)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, max(d, time.Millisecond)
	}
	return true, 0
}

// Len is the number of buckets kept.
func (k *Keyed) Len() int {
	n := 0
	for i := range k.shards {
		k.shards[i].mu.Lock()
		n += len(k.shards[i].buckets)
		k.shards[i].mu.Unlock()
	}
	return n
}

// sweep drops the idle buckets; when the shard is still at its bound it starts over, which
// only ever grants more (a fresh bucket is full) and only to a client flood of distinct keys.
func (s *shard) sweep(now time.Time, idle time.Duration, bound int) {
	for key, b := range s.buckets {
		if now.Sub(b.seen) > idle {
			delete(s.buckets, key)
		}
	}
	if len(s.buckets) >= bound {
		clear(s.buckets)
	}
	s.lastSweep = now
}
