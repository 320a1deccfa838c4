// Package privacy is what dsr publishes and ingest and analytics follow: each tenant's privacy
// policy (property rules, IP and user-agent handling, retention) and suppression list, the
// keyed hashes that stand for a data subject's identifiers wherever the raw value must not be
// kept (suppression entries, receipts, purged requests, hashed properties), and the JetStream
// key-value bucket that carries them (kv.go).
//
// Hashes are HMAC-SHA-256 under a per-tenant key derived from the mesh's privacy key (one
// secret file given to dsr, ingest and analytics: -privacy-key-file). Equal inputs give equal
// hashes within a tenant, different tenants get different hashes, and nobody without the key
// can test a guess (an email address) against a hash. The key is a constant of the stored data:
// changing it changes every hash, so old suppressions stop matching.
package privacy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"strings"
	"sync"
)

// MinKeyBytes is the least privacy key length accepted.
const MinKeyBytes = 32

// Hasher computes a tenant's keyed hashes. It is safe for concurrent use.
type Hasher struct {
	key     []byte
	tenants sync.Map // tenant -> *sync.Pool of hash.Hash keyed with the tenant's key
}

// NewHasher returns a Hasher for key (at least MinKeyBytes).
func NewHasher(key []byte) (*Hasher, error) {
	if len(key) < MinKeyBytes {
		return nil, fmt.Errorf("privacy key: %d bytes, want at least %d", len(key), MinKeyBytes)
	}
	return &Hasher{key: append([]byte(nil), key...)}, nil
}

// LoadKey reads a privacy key file: base64 (standard encoding) of at least MinKeyBytes bytes,
// surrounding white space ignored.
func LoadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read privacy key: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, errors.New("privacy key: the file must hold base64 (e.g. head -c32 /dev/urandom | base64)")
	}
	if len(key) < MinKeyBytes {
		return nil, fmt.Errorf("privacy key: %d bytes, want at least %d", len(key), MinKeyBytes)
	}
	return key, nil
}

// LoadHasher is LoadKey then NewHasher.
func LoadHasher(path string) (*Hasher, error) {
	key, err := LoadKey(path)
	if err != nil {
		return nil, err
	}
	return NewHasher(key)
}

// pool returns the tenant's pool of keyed HMACs.
func (h *Hasher) pool(tenant string) *sync.Pool {
	if p, ok := h.tenants.Load(tenant); ok {
		return p.(*sync.Pool)
	}
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte("campaignmesh privacy tenant\x00" + tenant))
	tenantKey := m.Sum(nil)
	p, _ := h.tenants.LoadOrStore(tenant, &sync.Pool{New: func() any {
		return &keyedMAC{mac: hmac.New(sha256.New, tenantKey), sum: make([]byte, 0, sha256.Size)}
	}})
	return p.(*sync.Pool)
}

// keyedMAC is a tenant's HMAC with the buffers one hash needs, reused through the tenant's
// pool: ingest hashes a few values of every event, so a hash allocates only its result.
type keyedMAC struct {
	mac     hash.Hash
	in, sum []byte
	hexed   [2 * sha256.Size]byte
}

// sum returns hex(HMAC(tenant key, domain || 0 || value)).
func (h *Hasher) sum(tenant, domain, value string) string {
	p := h.pool(tenant)
	k := p.Get().(*keyedMAC)
	k.mac.Reset()
	k.in = append(append(append(k.in[:0], domain...), 0), value...)
	k.mac.Write(k.in)
	k.sum = k.mac.Sum(k.sum[:0])
	hex.Encode(k.hexed[:], k.sum)
	out := string(k.hexed[:])
	if cap(k.in) > 4<<10 { // keep no large value's buffer
		k.in = nil
	}
	p.Put(k)
	return out
}

// SubjectHash is the hash that stands for a data subject's identifier (a user id, anonymous id
// or email; the kind is not part of it, so a suppressed value matches as user id and as
// anonymous id alike): 64 hex digits.
func (h *Hasher) SubjectHash(tenant, value string) string { return h.sum(tenant, "subject", value) }

// HashedValuePrefix starts every property value hashed by a policy's hash rule.
const HashedValuePrefix = "h:"

// ValueHash is a property value hashed by a policy rule: "h:" and 64 hex digits. It does not
// depend on the property's key, so one value hashed under two keys still matches.
func (h *Hasher) ValueHash(tenant, value string) string {
	return HashedValuePrefix + h.sum(tenant, "value", value)
}

// IsSubjectHash reports whether s has the form of a SubjectHash.
func IsSubjectHash(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
