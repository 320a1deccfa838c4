package dsr

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/kek"
	"github.com/campaignmesh/campaignmesh/services/dsr/receipt"
)

// Keyring holds the receipt signing key. It is generated at the first start and stored with
// its private half sealed under the configured key-encryption keys (internal/platform/kek):
// a copy of the database does not let anyone sign receipts. The newest key signs; every key
// stays published so old receipts keep verifying.
type Keyring struct {
	store Store
	kek   *kek.Keys

	mu     sync.RWMutex
	signer ed25519.PrivateKey
	keys   []ReceiptKey
}

// NewKeyring returns a keyring over store whose private keys are sealed under keks.
func NewKeyring(store Store, keks *kek.Keys) *Keyring { return &Keyring{store: store, kek: keks} }

func keyAD(kid string) []byte { return []byte("campaignmesh dsr receipt key\x00" + kid) }

// Load re-seals under the current KEK any key that is not yet, creates the first key when
// there is none, and opens the newest for signing.
func (k *Keyring) Load(ctx context.Context) error {
	if k.kek == nil {
		return errors.New("no key-encryption key configured: set -key-encryption-keys-file")
	}
	keys, err := k.store.ReceiptKeys(ctx)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return fmt.Errorf("generate receipt key: %w", err)
		}
		kid := receipt.KeyID(pub)
		kekID, sealed := k.kek.Seal(keyAD(kid), priv.Seed())
		if err := k.store.InsertReceiptKey(ctx, ReceiptKey{KID: kid, Public: pub, KEKID: kekID, Sealed: sealed, CreateTime: time.Now().UTC()}); err != nil {
			return err
		}
		if keys, err = k.store.ReceiptKeys(ctx); err != nil {
			return err
		}
	}
	for _, key := range keys {
		if key.KEKID == k.kek.Current() {
			continue
		}
		seed, err := k.kek.Open(key.KEKID, keyAD(key.KID), key.Sealed)
		if err != nil {
			return fmt.Errorf("receipt key %s: %w", key.KID, err)
		}
		kekID, sealed := k.kek.Seal(keyAD(key.KID), seed)
		if err := k.store.ResealReceiptKey(ctx, key.KID, key.KEKID, kekID, sealed); err != nil {
			return err
		}
	}
	newest := keys[0] // the store lists newest first
	seed, err := k.kek.Open(newest.KEKID, keyAD(newest.KID), newest.Sealed)
	if err != nil {
		return fmt.Errorf("receipt key %s: %w", newest.KID, err)
	}
	if len(seed) != ed25519.SeedSize {
		return fmt.Errorf("receipt key %s has a bad seed", newest.KID)
	}
	k.mu.Lock()
	k.signer, k.keys = ed25519.NewKeyFromSeed(seed), keys
	k.mu.Unlock()
	return nil
}

// Sign signs a receipt document with the newest key.
func (k *Keyring) Sign(d receipt.Document) (receipt.Receipt, error) {
	k.mu.RLock()
	signer := k.signer
	k.mu.RUnlock()
	if signer == nil {
		return receipt.Receipt{}, errors.New("receipt keys not loaded")
	}
	return receipt.Sign(d, signer)
}

// Public lists the verification keys, newest first (private halves cleared).
func (k *Keyring) Public(context.Context) ([]ReceiptKey, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]ReceiptKey, len(k.keys))
	for i, key := range k.keys {
		out[i] = ReceiptKey{KID: key.KID, Public: key.Public, CreateTime: key.CreateTime}
	}
	return out, nil
}
