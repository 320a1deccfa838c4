package auth

import (
	"fmt"

	"github.com/campaignmesh/campaignmesh/internal/platform/kek"
)

// Signing-key seeds are stored encrypted under a key-encryption key (KEK) from configuration,
// never in clear (internal/platform/kek says how, and how to rotate). The AEAD's additional
// data is the signing key's kid, so a ciphertext copied to another row does not decrypt.

// KEKSize is the size of a key-encryption key: AES-256.
const KEKSize = kek.Size

// KeyEncryptionKeys are the configured KEKs, the current (encrypting) one first.
type KeyEncryptionKeys = kek.Keys

// ParseKeyEncryptionKeys reads "id:base64(32 bytes),id2:…" (kek.Parse).
func ParseKeyEncryptionKeys(spec string) (*KeyEncryptionKeys, error) { return kek.Parse(spec) }

// additionalData binds a ciphertext to the signing key it belongs to.
func additionalData(kid string) []byte { return []byte("campaignmesh signing key seed\x00" + kid) }

// errNotEncrypted marks a row still in clear.
var errNotEncrypted = kek.ErrNotEncrypted

// sealSeed encrypts the seed of signing key kid under the current KEK: nonce || ciphertext.
func sealSeed(k *KeyEncryptionKeys, kid string, seed []byte) (string, []byte) {
	return k.Seal(additionalData(kid), seed)
}

// openSeed decrypts the seed of signing key kid stored under KEK kekID.
func openSeed(k *KeyEncryptionKeys, kid, kekID string, sealed []byte) ([]byte, error) {
	seed, err := k.Open(kekID, additionalData(kid), sealed)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", kid, err)
	}
	return seed, nil
}
