// Package kek holds key-encryption keys (KEKs): AES-256-GCM keys from configuration that
// encrypt a service's private keys at rest (auth's token signing keys, dsr's receipt signing
// keys), so a copy of the database (a backup, a replica, a leaked dump) does not let anyone
// sign. Several KEKs can be configured: the first encrypts, all decrypt, so rotating one is:
// prepend a new one, restart every replica (which re-encrypts under it), then drop the old
// one. The caller binds each ciphertext to its row with additional data (e.g. the key id), so
// a ciphertext copied to another row does not decrypt.
package kek

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Size is the size of a key-encryption key: AES-256.
const Size = 32

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,32}$`)

// Keys are the configured KEKs, the current (encrypting) one first.
type Keys struct {
	ids   []string
	aeads map[string]cipher.AEAD
}

// ErrNone is returned by Load when neither a spec nor a file is given.
var ErrNone = errors.New("no key-encryption key configured")

// ErrNotEncrypted is returned by Open for a value stored in clear (no KEK id).
var ErrNotEncrypted = errors.New("stored in clear")

// Parse reads "id:base64(32 bytes),id2:…". Errors name the entry by position and id, never its
// key material.
func Parse(spec string) (*Keys, error) {
	k := &Keys{aeads: map[string]cipher.AEAD{}}
	for i, entry := range strings.Split(strings.TrimSpace(spec), ",") {
		id, b64, ok := strings.Cut(strings.TrimSpace(entry), ":")
		if !ok || !idPattern.MatchString(id) {
			return nil, fmt.Errorf("key-encryption key %d: want id:base64, with an id of 1-32 letters, digits, '_', '.' or '-'", i+1)
		}
		if _, dup := k.aeads[id]; dup {
			return nil, fmt.Errorf("key-encryption key %d: id %q appears twice", i+1, id)
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
		if err != nil {
			raw, err = base64.RawURLEncoding.DecodeString(strings.TrimSpace(b64))
		}
		if err != nil || len(raw) != Size {
			return nil, fmt.Errorf("key-encryption key %q: want %d random bytes in base64 (e.g. head -c32 /dev/urandom | base64)", id, Size)
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

// Load reads the KEKs from spec ("id:base64,…") or from the file holding it (e.g. a mounted
// secret): exactly one of them; ErrNone when both are empty. Errors never show key material.
func Load(spec, file string) (*Keys, error) {
	switch {
	case spec != "" && file != "":
		return nil, errors.New("set one of -key-encryption-keys and -key-encryption-keys-file, not both")
	case file != "":
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read -key-encryption-keys-file: %w", err)
		}
		spec = string(data)
	}
	if strings.TrimSpace(spec) == "" {
		return nil, ErrNone
	}
	return Parse(spec)
}

// Current is the id of the KEK that encrypts.
func (k *Keys) Current() string { return k.ids[0] }

// String names the KEKs by id only, so that printing them never shows key material.
func (k *Keys) String() string { return "KEKs " + strings.Join(k.ids, ",") }

// Seal encrypts plaintext under the current KEK, bound to additionalData: it returns the KEK's
// id and nonce || ciphertext.
func (k *Keys) Seal(additionalData, plaintext []byte) (string, []byte) {
	aead := k.aeads[k.Current()]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Sprintf("read random: %v", err))
	}
	return k.Current(), aead.Seal(nonce, nonce, plaintext, additionalData)
}

// Open decrypts what Seal returned under KEK kekID with the same additionalData. An empty
// kekID is a value stored in clear: ErrNotEncrypted.
func (k *Keys) Open(kekID string, additionalData, sealed []byte) ([]byte, error) {
	if kekID == "" {
		return nil, ErrNotEncrypted
	}
	aead, ok := k.aeads[kekID]
	if !ok {
		return nil, fmt.Errorf("encrypted under key-encryption key %q, which is not configured", kekID)
	}
	if len(sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, errors.New("ciphertext too short")
	}
	n := aead.NonceSize()
	plain, err := aead.Open(nil, sealed[:n], sealed[n:], additionalData)
	if err != nil {
		return nil, fmt.Errorf("does not decrypt under key-encryption key %q (wrong key, or the row was altered)", kekID)
	}
	return plain, nil
}
