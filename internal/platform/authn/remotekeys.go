package authn

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"sync"
	"time"
)

// RemoteKeys is a KeySource that fetches the auth service's published keys over mTLS and
// caches them. It refetches when the cache is older than maxAge, and on an unknown kid (key
// rotation) — but at most once per minRefresh, so forged kids cannot flood the auth service.
type RemoteKeys struct {
	auth       Auth
	maxAge     time.Duration
	minRefresh time.Duration
	now        func() time.Time

	mu        sync.Mutex
	keys      map[string]ed25519.PublicKey
	fetchedAt time.Time
	fetchErr  error // of the last fetch
}

// Defaults of NewRemoteKeys.
const (
	DefaultKeysMaxAge     = 5 * time.Minute
	DefaultKeysMinRefresh = 10 * time.Second
)

// NewRemoteKeys returns a key source backed by the auth service that keeps keys at most maxAge
// and refetches for an unknown kid at most every minRefresh (zero values: the defaults).
func NewRemoteKeys(auth Auth, maxAge, minRefresh time.Duration) *RemoteKeys {
	if maxAge <= 0 {
		maxAge = DefaultKeysMaxAge
	}
	if minRefresh <= 0 {
		minRefresh = DefaultKeysMinRefresh
	}
	return &RemoteKeys{auth: auth, maxAge: maxAge, minRefresh: minRefresh, now: time.Now}
}

// WithClock makes r read the time from now, so a test can step past maxAge or minRefresh.
func (r *RemoteKeys) WithClock(now func() time.Time) *RemoteKeys {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.now = now
	return r
}

// PublicKey implements KeySource.
func (r *RemoteKeys) PublicKey(ctx context.Context, kid string) (ed25519.PublicKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key, known := r.keys[kid]
	age := r.now().Sub(r.fetchedAt)
	if (known && age < r.maxAge) || (!known && age < r.minRefresh) {
		if !known && r.fetchErr != nil {
			return nil, r.fetchErr // auth was unreachable: say so (UNAVAILABLE), not "unknown key"
		}
		if !known {
			return nil, ErrUnknownKey
		}
		return key, nil
	}
	if err := r.fetch(ctx); err != nil {
		if known {
			return key, nil // auth is unreachable: keep verifying with what we had
		}
		return nil, err
	}
	if key, ok := r.keys[kid]; ok {
		return key, nil
	}
	return nil, ErrUnknownKey
}

func (r *RemoteKeys) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	keys, err := r.auth.SigningKeys(ctx)
	r.fetchedAt = r.now()
	if err != nil {
		r.fetchErr = fmt.Errorf("fetch signing keys: %w", err)
		return r.fetchErr
	}
	r.fetchErr = nil
	r.keys = keys
	return nil
}
