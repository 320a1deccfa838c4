package dedup_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/services/analytics/dedup"
)

// clock is a test clock moved by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newFilter(t *testing.T, c *clock, window time.Duration, capacity uint64) *dedup.Filter {
	t.Helper()
	f, err := dedup.New(dedup.Config{Window: window, Capacity: capacity, FalsePositiveRate: 0.01, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A key is remembered at least a window after it was added, whenever in the life of the current
// filter it was added and however the calls fall around a rotation; it is forgotten within two
// windows.
func TestFilterRemembersAKeyForTheWindow(t *testing.T) {
	const window = 48 * time.Hour
	for _, tc := range []struct {
		name string
		// addAfter is how long after the filter's start the key is added; lookups are made at
		// each of the offsets after the addition.
		addAfter time.Duration
		checks   []time.Duration
	}{
		{"added at once, looked up across rotations", 0, []time.Duration{time.Second, 5 * time.Minute, time.Hour, 47 * time.Hour, window - time.Nanosecond}},
		{"added just before a rotation", window - time.Second, []time.Duration{time.Second, 2 * time.Second, time.Hour, window - time.Nanosecond}},
		{"added just after a rotation", window + time.Second, []time.Duration{time.Second, window - time.Second, window - time.Nanosecond}},
		{"looked up only once, a window later", time.Hour, []time.Duration{window - time.Nanosecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			f := newFilter(t, c, window, 1000)
			if tc.addAfter > window {
				f.MayContain("t", "warm-up") // a call in the first window
			}
			c.advance(tc.addAfter)
			f.Add("t1", "e1")
			added := c.t
			for _, at := range tc.checks {
				c.t = added.Add(at)
				if !f.MayContain("t1", "e1") {
					t.Fatalf("key forgotten %s after it was added (window %s)", at, window)
				}
			}
			// In use (a call an hour), the filter has rotated twice two windows later.
			for c.t.Before(added.Add(2 * window)) {
				c.advance(time.Hour)
				f.MayContain("t", "other")
			}
			if f.MayContain("t1", "e1") {
				t.Errorf("key still remembered two windows after it was added")
			}
		})
	}
}

// Keys of one tenant do not answer for another tenant's, nor does the split between tenant
// and id blur.
func TestFilterKeysAreTenantAndEventID(t *testing.T) {
	c := &clock{t: time.Now()}
	f := newFilter(t, c, time.Hour, 1_000_000)
	f.Add("ab", "c")
	if !f.MayContain("ab", "c") {
		t.Fatal("added key not found")
	}
	for _, k := range [][2]string{{"a", "bc"}, {"abc", ""}, {"", "abc"}, {"other", "c"}} {
		if f.MayContain(k[0], k[1]) {
			t.Errorf("MayContain(%q, %q) = true in a nearly empty filter of 1M keys", k[0], k[1])
		}
	}
}

// The measured false-positive rate stays near the one asked when the filter holds its capacity,
// and memory does not grow with more keys than that: only the rate does.
func TestFilterFalsePositiveRateAndMemory(t *testing.T) {
	const capacity = 200_000
	c := &clock{t: time.Now()}
	f := newFilter(t, c, time.Hour, capacity)
	bytes := f.Bytes()
	for i := range capacity {
		f.Add("t1", fmt.Sprintf("in-%d", i))
	}
	for i := range capacity {
		if !f.MayContain("t1", fmt.Sprintf("in-%d", i)) {
			t.Fatalf("added key in-%d not found", i)
		}
	}
	rate := func() float64 {
		fp := 0
		const probes = 200_000
		for i := range probes {
			if f.MayContain("t1", fmt.Sprintf("out-%d", i)) {
				fp++
			}
		}
		return float64(fp) / probes
	}
	atCapacity := rate()
	t.Logf("capacity %d keys: %d bytes (%.1f bits/key in each of 2 filters), false positives %.3f%% (asked 1%%)",
		capacity, bytes, float64(bytes*8)/2/capacity, 100*atCapacity)
	if atCapacity > 0.015 {
		t.Errorf("false-positive rate at capacity %.4f, want about 0.01", atCapacity)
	}
	for i := range 4 * capacity {
		f.Add("t1", fmt.Sprintf("more-%d", i))
	}
	if f.Bytes() != bytes {
		t.Errorf("memory grew from %d to %d bytes with 5× the capacity", bytes, f.Bytes())
	}
	over := rate()
	t.Logf("5× the capacity: false positives %.1f%%", 100*over)
	if over <= atCapacity {
		t.Errorf("false-positive rate %.4f at 5× the capacity, want above %.4f", over, atCapacity)
	}
	if n := f.Keys(); n != 5*capacity {
		t.Errorf("Keys = %d, want %d", n, 5*capacity)
	}
	// A rotation forgets the previous filter's count; the next one its keys.
	c.advance(time.Hour)
	f.Add("t1", "new")
	if n := f.Keys(); n != 5*capacity+1 {
		t.Errorf("Keys after a rotation = %d, want %d", n, 5*capacity+1)
	}
	c.advance(time.Hour)
	if n := f.Keys(); n != 1 {
		t.Errorf("Keys after two rotations = %d, want 1", n)
	}
}

func TestNewRejectsABadConfig(t *testing.T) {
	for _, cfg := range []dedup.Config{
		{Window: 0, Capacity: 1, FalsePositiveRate: 0.01},
		{Window: time.Hour, Capacity: 0, FalsePositiveRate: 0.01},
		{Window: time.Hour, Capacity: 1, FalsePositiveRate: 0},
		{Window: time.Hour, Capacity: 1, FalsePositiveRate: 1},
	} {
		if _, err := dedup.New(cfg); err == nil {
			t.Errorf("New(%+v) = nil error", cfg)
		}
	}
}

// BenchmarkFilter prints ns per key of Add and of MayContain (hits and misses) on a filter of
// the writer's default size, 50M keys per window at 1%, holding 1M keys.
func BenchmarkFilter(b *testing.B) {
	f, err := dedup.New(dedup.Config{Window: 48 * time.Hour, Capacity: 50_000_000, FalsePositiveRate: 0.01})
	if err != nil {
		b.Fatal(err)
	}
	const n = 1 << 20
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("0a3f5c2e-%08x-4b1d-9e6f-%012x", i, i*7919)
	}
	b.Logf("%d MiB for 2 filters", f.Bytes()>>20)
	b.Run("Add", func(b *testing.B) {
		for i := range b.N {
			f.Add("tenant-1", keys[i&(n-1)])
		}
	})
	b.Run("MayContain/hit", func(b *testing.B) {
		for i := range b.N {
			f.MayContain("tenant-1", keys[i&(n-1)])
		}
	})
	b.Run("MayContain/miss", func(b *testing.B) {
		for i := range b.N {
			f.MayContain("tenant-2", keys[i&(n-1)])
		}
	})
}
