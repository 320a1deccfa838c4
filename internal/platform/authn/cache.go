package authn

import (
	"crypto/sha256"
	"sync"
	"time"
)

// principalCacheMax bounds a principal cache; when full, expired entries go, and if that frees
// nothing, the cache starts over.
const principalCacheMax = 10000

// principalCache keeps verified credentials' principals until a deadline. Credentials are keyed
// by their SHA-256 only, so secrets are never held.
type principalCache struct {
	mu      sync.Mutex
	entries map[[32]byte]cachedPrincipal
}

type cachedPrincipal struct {
	p     Principal
	until time.Time
}

func credentialKey(credential string) [32]byte { return sha256.Sum256([]byte(credential)) }

// get returns a copy of the principal kept for key, if it is still valid at now.
func (c *principalCache) get(key [32]byte, now time.Time) (*Principal, bool) {
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if !ok || !now.Before(e.until) {
		return nil, false
	}
	p := e.p
	return &p, true
}

// put keeps p for key until the deadline.
func (c *principalCache) put(key [32]byte, p Principal, until, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= principalCacheMax {
		for k, e := range c.entries {
			if !now.Before(e.until) {
				delete(c.entries, k)
			}
		}
		if c.entries == nil || len(c.entries) >= principalCacheMax {
			c.entries = map[[32]byte]cachedPrincipal{}
		}
	}
	c.entries[key] = cachedPrincipal{p: p, until: until}
}
