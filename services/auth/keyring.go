package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
)

// StoredKey is a signing key. RetireTime is nil for the active key. The store persists only
// Sealed (the seed encrypted under the KEK KEKID; "" for a legacy row whose Sealed is the seed
// in clear); the keyring fills Private.
type StoredKey struct {
	KID        string
	Private    ed25519.PrivateKey
	KEKID      string
	Sealed     []byte
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
	kek       *KeyEncryptionKeys

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

// ErrNoKEK is returned by Load when no key-encryption key is configured.
var ErrNoKEK = errors.New("no key-encryption key configured: set -key-encryption-keys or -key-encryption-keys-file " +
	"(id:base64 of 32 random bytes, e.g. kek1:$(head -c32 /dev/urandom | base64))")

// Load encrypts under the current KEK every stored key that is not yet (in clear, or under an
// older KEK), then reads the keys, creating the first active key when there is none.
func (k *Keyring) Load(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.kek == nil {
		return ErrNoKEK
	}
	if err := k.reseal(ctx); err != nil {
		return err
	}
	return k.loadLocked(ctx)
}

// reseal encrypts again under the current KEK the keys stored in clear or under another KEK.
// Replicas may race: the store only replaces a row still under the KEK it was read with.
func (k *Keyring) reseal(ctx context.Context) error {
	rows, err := k.store.SigningKeysToReseal(ctx, k.kek.Current())
	if err != nil {
		return fmt.Errorf("list signing keys to encrypt: %w", err)
	}
	for _, row := range rows {
		seed := row.Sealed
		if row.KEKID != "" {
			if seed, err = openSeed(k.kek, row.KID, row.KEKID, row.Sealed); err != nil {
				return fmt.Errorf("encrypt signing keys under key-encryption key %q: %w", k.kek.Current(), err)
			}
		}
		if len(seed) != ed25519.SeedSize {
			return fmt.Errorf("signing key %s has a bad seed", row.KID)
		}
		kekID, sealed := sealSeed(k.kek, row.KID, seed)
		if err := k.store.ResealSigningKey(ctx, row.KID, row.KEKID, kekID, sealed); err != nil {
			return fmt.Errorf("encrypt signing key %s: %w", row.KID, err)
		}
	}
	return nil
}

// unseal fills key.Private from its sealed seed.
func (k *Keyring) unseal(key *StoredKey) error {
	seed, err := openSeed(k.kek, key.KID, key.KEKID, key.Sealed)
	if errors.Is(err, errNotEncrypted) {
		return fmt.Errorf("signing key %s is stored in clear (a restart of auth encrypts it)", key.KID)
	}
	if err != nil {
		return err
	}
	if len(seed) != ed25519.SeedSize {
		return fmt.Errorf("signing key %s has a bad seed", key.KID)
	}
	key.Private = ed25519.NewKeyFromSeed(seed)
	return nil
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
			if err := k.unseal(&stored[i]); err != nil {
				return fmt.Errorf("load signing keys: %w", err)
			}
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
		if err := k.insertNew(ctx, nil); err != nil && attempt == 1 {
			return err
		}
	}
	return fmt.Errorf("load signing keys: no active key")
}

// insertNew makes a new key the active one, appending rec (the audit record of a rotation, or
// nil) with it.
func (k *Keyring) insertNew(ctx context.Context, rec *AuditEntry) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate signing key: %w", err)
	}
	sum := sha256.Sum256(priv.Public().(ed25519.PublicKey))
	kid := base64.RawURLEncoding.EncodeToString(sum[:12])
	kekID, sealed := sealSeed(k.kek, kid, priv.Seed())
	return k.store.InsertSigningKey(ctx, StoredKey{KID: kid, KEKID: kekID, Sealed: sealed}, rec)
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

// Rotate makes a new key active and returns it; rec, when not nil, is the audit record of the
// rotation, stored with the new key.
func (k *Keyring) Rotate(ctx context.Context, rec *AuditEntry) (PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.insertNew(ctx, rec); err != nil {
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
