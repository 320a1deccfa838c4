package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
)

// StoredKey is a signing key as persisted. RetireTime is nil for the active key.
type StoredKey struct {
	KID        string
	Private    ed25519.PrivateKey
	CreateTime time.Time
	RetireTime *time.Time
}

// PublicKey is a published verification key.
type PublicKey struct {
	KID        string
	Key        ed25519.PublicKey
	Active     bool
	CreateTime time.Time
}

// Keyring holds the signing keys. The active key signs new tokens; retired keys keep verifying
// (and stay published) until every token they signed has expired. Several auth replicas share
// the keys through the store and reload them periodically and on an unknown kid.
type Keyring struct {
	store     Store
	tokenTTL  time.Duration
	reloadAge time.Duration

	mu       sync.Mutex
	active   *StoredKey
	keys     map[string]StoredKey
	loadedAt time.Time
}

// NewKeyring returns a keyring for tokens that live tokenTTL.
func NewKeyring(store Store, tokenTTL time.Duration) *Keyring {
	return &Keyring{store: store, tokenTTL: tokenTTL, reloadAge: 30 * time.Second}
}

// publishWindow is how long a retired key stays published: long enough for its last token.
func (k *Keyring) publishWindow() time.Duration { return k.tokenTTL + time.Minute }

// Load reads the keys, creating the first active key when there is none.
func (k *Keyring) Load(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.loadLocked(ctx)
}

func (k *Keyring) loadLocked(ctx context.Context) error {
	for attempt := 0; attempt < 2; attempt++ {
		stored, err := k.store.ListSigningKeys(ctx, time.Now().Add(-k.publishWindow()))
		if err != nil {
			return fmt.Errorf("load signing keys: %w", err)
		}
		keys := make(map[string]StoredKey, len(stored))
		var active *StoredKey
		for i := range stored {
			keys[stored[i].KID] = stored[i]
			if stored[i].RetireTime == nil {
				active = &stored[i]
			}
		}
		if active != nil {
			k.keys, k.active, k.loadedAt = keys, active, time.Now()
			return nil
		}
		// No active key yet (first start): create one. A replica racing us may win; reload then.
		if err := k.insertNew(ctx); err != nil && attempt == 1 {
			return err
		}
	}
	return fmt.Errorf("load signing keys: no active key")
}

func (k *Keyring) insertNew(ctx context.Context) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate signing key: %w", err)
	}
	sum := sha256.Sum256(priv.Public().(ed25519.PublicKey))
	kid := base64.RawURLEncoding.EncodeToString(sum[:12])
	return k.store.InsertSigningKey(ctx, StoredKey{KID: kid, Private: priv})
}

func (k *Keyring) fresh(ctx context.Context) error {
	if time.Since(k.loadedAt) < k.reloadAge {
		return nil
	}
	return k.loadLocked(ctx)
}

// Signer returns the active key's id and private key.
func (k *Keyring) Signer(ctx context.Context) (string, ed25519.PrivateKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.fresh(ctx); err != nil && k.active == nil {
		return "", nil, err
	}
	return k.active.KID, k.active.Private, nil
}

// PublicKey implements authn.KeySource for the auth service's own verification.
func (k *Keyring) PublicKey(ctx context.Context, kid string) (ed25519.PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key, ok := k.keys[kid]
	if !ok && time.Since(k.loadedAt) > time.Second {
		// Another replica may have rotated: reload, at most once a second.
		if err := k.loadLocked(ctx); err != nil {
			return nil, err
		}
		key, ok = k.keys[kid]
	}
	if !ok || !k.published(key) {
		return nil, authn.ErrUnknownKey
	}
	return key.Private.Public().(ed25519.PublicKey), nil
}

func (k *Keyring) published(key StoredKey) bool {
	return key.RetireTime == nil || time.Since(*key.RetireTime) < k.publishWindow()
}

// Published lists the keys that verify tokens, newest first.
func (k *Keyring) Published(ctx context.Context) ([]PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.fresh(ctx); err != nil && k.active == nil {
		return nil, err
	}
	var out []PublicKey
	for _, key := range k.keys {
		if k.published(key) {
			out = append(out, PublicKey{KID: key.KID, Key: key.Private.Public().(ed25519.PublicKey), Active: key.RetireTime == nil, CreateTime: key.CreateTime})
		}
	}
	sortNewestFirst(out)
	return out, nil
}

// Rotate makes a new key active and returns it.
func (k *Keyring) Rotate(ctx context.Context) (PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.insertNew(ctx); err != nil {
		return PublicKey{}, fmt.Errorf("rotate signing key: %w", err)
	}
	if err := k.loadLocked(ctx); err != nil {
		return PublicKey{}, err
	}
	a := k.active
	return PublicKey{KID: a.KID, Key: a.Private.Public().(ed25519.PublicKey), Active: true, CreateTime: a.CreateTime}, nil
}

func sortNewestFirst(keys []PublicKey) {
	slices.SortFunc(keys, func(a, b PublicKey) int { return b.CreateTime.Compare(a.CreateTime) })
}
