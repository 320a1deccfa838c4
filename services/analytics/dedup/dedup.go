// Package dedup remembers which events — keys of a tenant and an event id — were seen within a
// time window, in memory fixed by a capacity whatever the traffic. It answers "maybe seen" or
// "certainly not seen": the analytics writer confirms a "maybe" against its store before it drops
// an event as already stored, so a false positive costs a lookup, never an event.
//
// A Filter is two Bloom filters, the current one and the previous one. Keys go into the current
// one; a key is looked up in both. When the current one is older than the window it becomes the
// previous one and an emptied filter takes its place, so a key added at t is remembered at least
// until t+Window (and forgotten by t+2·Window at the latest, when the filter is in use). Memory is
// the two filters' bits, sized for Capacity keys per window at FalsePositiveRate; more keys only
// raise the false-positive rate.
//
// Each Bloom filter is blocked: all bits of a key lie in one 512-bit block (a cache line), so a
// look-up or an addition costs one cache miss however many bits a key sets, instead of one per
// bit — what matters for filters of tens of megabytes at the writer's rate. Blocks are a little
// less even than single bits, so the filter is sized for the rate of the blocked layout (Sizing).
package dedup

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"
	"math/bits"
	"time"
)

// Config sizes a Filter.
type Config struct {
	// Window is how long a key is at least remembered after it was added.
	Window time.Duration
	// Capacity is the number of keys expected per window: the filters are sized for it.
	Capacity uint64
	// FalsePositiveRate is the rate of MayContain answering true for a key never added, when
	// each filter holds Capacity keys; it is higher when more keys come.
	FalsePositiveRate float64
	// Now is the clock that rotates the filters; nil means time.Now.
	Now func() time.Time
}

// Filter is a time-windowed membership filter of event keys. It is not safe for concurrent use:
// the writer that owns it calls it from one goroutine.
type Filter struct {
	window time.Duration
	now    func() time.Time
	k      int // bits set per key
	// words holds both filters, block by block: block i of one filter next to block i of the
	// other, so that a look-up in both touches two neighbouring cache lines of one page. cur is
	// the offset of the current filter's half of a pair (0 or blockWords).
	words       []uint64
	cur         int
	curStart    time.Time
	added       uint64 // additions in both filters, repeats included
	addedToPrev uint64 // of which in the previous one
	h           maphash.Hash
}

const blockWords = 8 // 512-bit blocks

// New returns an empty filter sized by cfg.
func New(cfg Config) (*Filter, error) {
	if cfg.Window <= 0 || cfg.Capacity == 0 || !(cfg.FalsePositiveRate > 0 && cfg.FalsePositiveRate < 1) {
		return nil, fmt.Errorf("dedup filter: window (%s) and capacity (%d) must be positive, false-positive rate (%g) between 0 and 1",
			cfg.Window, cfg.Capacity, cfg.FalsePositiveRate)
	}
	blocks, k := Sizing(cfg.Capacity, cfg.FalsePositiveRate)
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	// One seed for the filter's life: keys hash the same in both filters. It is random per
	// process, which is fine: a restarted writer rebuilds its filter from the store.
	f := &Filter{window: cfg.Window, now: now, k: k,
		words: make([]uint64, 2*blockWords*blocks)}
	f.h.SetSeed(maphash.MakeSeed())
	f.curStart = now()
	return f, nil
}

// Sizing returns how many 512-bit blocks and how many bits per key a filter needs for capacity
// keys at false-positive rate p: the size of a classic Bloom filter for them, grown until the
// expected rate of the blocked layout (keys fall unevenly into blocks) is at most p.
func Sizing(capacity uint64, p float64) (blocks uint64, k int) {
	n := float64(capacity)
	bitsPerKey := -math.Log(p) / (math.Ln2 * math.Ln2)
	for {
		k = max(1, int(math.Round(bitsPerKey*math.Ln2)))
		blocks = max(1, uint64(math.Ceil(n*bitsPerKey/512)))
		if blockedRate(n/float64(blocks), k) <= p || bitsPerKey > 64 {
			return blocks, k
		}
		bitsPerKey *= 1.05
	}
}

// blockedRate is the expected false-positive rate of a blocked filter whose blocks hold lambda
// keys on average (a Poisson number of them), each setting k of a block's 512 bits.
func blockedRate(lambda float64, k int) float64 {
	rate := 0.0
	pj := math.Exp(-lambda) // P(j keys in a block), j = 0
	top := int(lambda + 12*math.Sqrt(lambda) + 24)
	for j := 0; j <= top; j++ {
		if j > 0 {
			pj *= lambda / float64(j)
		}
		set := 1 - math.Pow(1-1.0/512, float64(k*j)) // a given bit is set after j keys
		rate += pj * math.Pow(set, float64(k))
	}
	return rate
}

// Add remembers the key of tenant's event eventID.
func (f *Filter) Add(tenant, eventID string) {
	f.rotate()
	pair, pos := f.locate(tenant, eventID)
	b := f.words[pair+f.cur : pair+f.cur+blockWords : pair+f.cur+blockWords]
	for i := 0; i < f.k; i++ {
		if i%7 == 0 && i > 0 {
			pos = mix(pos)
		}
		bit := (pos >> (9 * (i % 7))) & 511
		b[bit>>6] |= 1 << (bit & 63)
	}
	f.added++
}

// MayContain tells whether the key of tenant's event eventID may have been added within the
// window: false means it certainly was not (or longer ago than the window), true that it
// probably was.
func (f *Filter) MayContain(tenant, eventID string) bool {
	f.rotate()
	pair, pos := f.locate(tenant, eventID)
	return f.has(pair+f.cur, pos) || f.has(pair+blockWords-f.cur, pos)
}

// has tells whether the block at word offset holds every bit of pos.
func (f *Filter) has(offset int, pos uint64) bool {
	b := f.words[offset : offset+blockWords : offset+blockWords]
	for i := 0; i < f.k; i++ {
		if i%7 == 0 && i > 0 {
			pos = mix(pos)
		}
		bit := (pos >> (9 * (i % 7))) & 511
		if b[bit>>6]&(1<<(bit&63)) == 0 {
			return false
		}
	}
	return true
}

// Keys is how many additions the filter remembers (both filters; a key added twice counts
// twice): when it is well above the capacity, the false-positive rate is above the one asked.
func (f *Filter) Keys() uint64 {
	f.rotate()
	return f.added
}

// Bytes is the memory the filter's bits take, fixed at New.
func (f *Filter) Bytes() int {
	return 8 * len(f.words)
}

// rotate turns the current filter into the previous one once it is older than the window,
// dropping the previous one: every key in it was added before the current one started, at
// least a window ago. The emptied bits are reused, so memory stays the same.
func (f *Filter) rotate() {
	now := f.now()
	if now.Sub(f.curStart) < f.window {
		return
	}
	prev := blockWords - f.cur
	for i := prev; i < len(f.words); i += 2 * blockWords {
		clear(f.words[i : i+blockWords])
	}
	f.cur = prev
	f.curStart = now
	f.added -= f.addedToPrev
	f.addedToPrev = f.added
}

// locate hashes a key to its pair of blocks (the offset of the pair's first word) and the bit
// positions within a block. The tenant's length is hashed too, so that ("ab", "c") and
// ("a", "bc") differ.
func (f *Filter) locate(tenant, eventID string) (pair int, pos uint64) {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(tenant)))
	f.h.Reset()
	_, _ = f.h.Write(n[:])
	_, _ = f.h.WriteString(tenant)
	_, _ = f.h.WriteString(eventID)
	sum := f.h.Sum64()
	pairs := uint64(len(f.words) / (2 * blockWords))
	hi, _ := bits.Mul64(sum, pairs) // a uniform pair from the hash, without a division
	return int(hi) * 2 * blockWords, mix(sum)
}

// mix is the SplitMix64 finaliser: bit positions independent of the bits that chose the block.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
