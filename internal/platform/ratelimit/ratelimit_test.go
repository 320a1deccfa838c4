package ratelimit

import (
	"fmt"
	"hash/maphash"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newAt(cfg Config) (*Keyed, *clock) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	k := New(cfg)
	k.now = c.now
	return k, c
}

func TestAllowSpendsTheBurstThenSaysWhenToRetry(t *testing.T) {
	k, c := newAt(PerWindow(3, 10*time.Second))
	for i := range 3 {
		if ok, _ := k.Allow("10.0.0.1", 1); !ok {
			t.Fatalf("request %d refused within the burst", i)
		}
	}
	ok, retry := k.Allow("10.0.0.1", 1)
	if ok || retry <= 0 || retry > 10*time.Second {
		t.Fatalf("4th request: ok=%v retry=%v, want refused with a retry within the window", ok, retry)
	}
	if ok, _ := k.Allow("10.0.0.2", 1); !ok {
		t.Fatal("another key shares the first key's bucket")
	}
	c.t = c.t.Add(retry)
	if ok, _ := k.Allow("10.0.0.1", 1); !ok {
		t.Fatal("refused again after waiting the retry it was given")
	}
}

func TestAllowTakesNTokensOrNone(t *testing.T) {
	k, _ := newAt(Config{Rate: 100, Burst: 200})
	if ok, _ := k.Allow("tenant:a", 150); !ok {
		t.Fatal("150 of a 200 burst refused")
	}
	if ok, _ := k.Allow("tenant:a", 100); ok {
		t.Fatal("100 more allowed with 50 left")
	}
	if ok, _ := k.Allow("tenant:a", 50); !ok {
		t.Fatal("the refused call took tokens: 50 left should be allowed")
	}
	if ok, retry := k.Allow("tenant:b", 201); ok || retry != time.Second {
		t.Fatalf("more than the burst: ok=%v retry=%v, want refused, retry 1s", ok, retry)
	}
}

func TestIdleBucketsAreDroppedAndKeysBounded(t *testing.T) {
	k, c := newAt(Config{Rate: 10, Burst: 10, MaxKeys: 1600})
	for i := range 1000 {
		k.Allow(fmt.Sprint("ip-", i), 1)
	}
	if n := k.Len(); n != 1000 {
		t.Fatalf("kept %d buckets, want 1000", n)
	}
	c.t = c.t.Add(2 * time.Second) // every bucket has refilled
	k.Allow("fresh", 1)
	for i := range shards { // each shard sweeps on its next use
		for j := 0; ; j++ {
			key := fmt.Sprint("probe-", i, "-", j)
			if int(hashOf(k, key)%shards) == i {
				k.Allow(key, 1)
				break
			}
		}
	}
	if n := k.Len(); n > shards+1 {
		t.Fatalf("kept %d buckets after they went idle, want only the new ones", n)
	}
	for i := range 100_000 { // a flood of distinct keys within the idle time
		k.Allow(fmt.Sprint("flood-", i), 1)
	}
	if n := k.Len(); n > 1600+shards {
		t.Fatalf("kept %d buckets, bound is 1600", n)
	}
}
func hashOf(k *Keyed, key string) uint64 { return maphash.String(k.seed, key) }
