package auth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Signing-key seeds are stored encrypted with AES-256-GCM under a key-encryption key (KEK) from
// configuration, never in clear: a copy of the database (a backup, a replica, a leaked dump)
// does not let anyone sign tokens. Several KEKs can be configured: the first encrypts, all
// decrypt, and on start every row under another KEK (or still in clear) is encrypted again
// under the first. Rotating the KEK is: prepend a new one, restart every replica, then drop
// the old one. The AEAD's additional data is the signing key's kid, so a ciphertext copied to
// another row does not decrypt.

// KEKSize is the size of a key-encryption key: AES-256.
const KEKSize = 32

var kekIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,32}$`)

// KeyEncryptionKeys are the configured KEKs, the current (encrypting) one first.
type KeyEncryptionKeys struct {
	ids   []string
	aeads map[string]cipher.AEAD
}

// ParseKeyEncryptionKeys reads "id:base64(32 bytes),id2:…". Errors name the entry by position
// and id, never its key material.
func ParseKeyEncryptionKeys(spec string) (*KeyEncryptionKeys, error) {
	k := &KeyEncryptionKeys{aeads: map[string]cipher.AEAD{}}
	for i, entry := range strings.Split(strings.TrimSpace(spec), ",") {
		id, b64, ok := strings.Cut(strings.TrimSpace(entry), ":")
		if !ok || !kekIDPattern.MatchString(id) {
			return nil, fmt.Errorf("key-encryption key %d: want id:base64, with an id of 1-32 letters, digits, '_', '.' or '-'", i+1)
		}
		if _, dup := k.aeads[id]; dup {
			return nil, fmt.Errorf("key-encryption key %d: id %q appears twice", i+1, id)
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
		if err != nil {
			raw, err = base64.RawURLEncoding.DecodeString(strings.TrimSpace(b64))
		}
		if err != nil || len(raw) != KEKSize {
			return nil, fmt.Errorf("key-encryption key %q: want %d random bytes in base64 (e.g. head -c32 /dev/urandom | base64)", id, KEKSize)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, fmt.Errorf("key-encryption key %q: %w", id, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("key-encryption key %q: %w", id, err)
		}
		k.ids = append(k.ids, id)
		k.aeads[id] = aead
	}
	return k, nil
}

// Current is the id of the KEK that encrypts.
func (k *KeyEncryptionKeys) Current() string { return k.ids[0] }

// String names the KEKs by id only, so that printing them never shows key material.
func (k *KeyEncryptionKeys) String() string { return "KEKs " + strings.Join(k.ids, ",") }

// additionalData binds a ciphertext to the signing key it belongs to.
func additionalData(kid string) []byte { return []byte("campaignmesh signing key seed\x00" + kid) }

// seal encrypts the seed of signing key kid under the current KEK: nonce || ciphertext.
func (k *KeyEncryptionKeys) seal(kid string, seed []byte) (string, []byte) {
	aead := k.aeads[k.Current()]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Sprintf("read random: %v", err))
	}
	return k.Current(), aead.Seal(nonce, nonce, seed, additionalData(kid))
}

// errNotEncrypted marks a row still in clear.
var errNotEncrypted = errors.New("stored in clear")

// open decrypts the seed of signing key kid stored under KEK kekID.
func (k *KeyEncryptionKeys) open(kid, kekID string, sealed []byte) ([]byte, error) {
	if kekID == "" {
		return nil, fmt.Errorf("signing key %s: %w", kid, errNotEncrypted)
	}
	aead, ok := k.aeads[kekID]
	if !ok {
		return nil, fmt.Errorf("signing key %s is encrypted under key-encryption key %q, which is not configured", kid, kekID)
	}
	if len(sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("signing key %s: ciphertext too short", kid)
	}
	n := aead.NonceSize()
	seed, err := aead.Open(nil, sealed[:n], sealed[n:], additionalData(kid))
	if err != nil {
		return nil, fmt.Errorf("signing key %s does not decrypt under key-encryption key %q (wrong key, or the row was altered)", kid, kekID)
	}
	return seed, nil
}
