package delivery

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"unicode/utf8"
)

// Links makes the tracked URLs put into a message: a click redirect for each link, an open
// pixel and the recipient's unsubscribe URL. ref is the ledger row's id (opaque, no personal
// data); the URLs carry only ref (and the target) under a signature.
type Links interface {
	Click(ref, target string) string
	Open(ref string) string
	Unsubscribe(ref string) string
}

// TokenKind is what a tracking token is for: a token made for one kind is refused as another.
type TokenKind byte

// The token kinds.
const (
	TokenClick       TokenKind = 'c'
	TokenOpen        TokenKind = 'o'
	TokenUnsubscribe TokenKind = 'u'
)

// Token bounds. A ref is a ledger id (digits), a target a link of a message: longer ones are
// not tracked (MaxTrackedURL) so that a token stays a URL every mail client keeps intact.
const (
	MaxRefLen     = 64
	MaxTrackedURL = 2048
	// MinTrackingKeyLen is the least key length: HMAC-SHA256 gains nothing above 32 bytes and
	// loses strength below.
	MinTrackingKeyLen = 32
	// tokenMACLen is the signature's length in a token: 128 bits of HMAC-SHA256 is beyond any
	// online forgery (each guess is an HTTP request) and keeps links short.
	tokenMACLen  = 16
	tokenVersion = 1
	// maxTokenLen bounds what Verify decodes.
	maxTokenLen = 4 * (3 + MaxRefLen + MaxTrackedURL + tokenMACLen + 8) / 3
)

// ErrBadToken is the answer to any token that does not verify: forged, altered, truncated, of
// another kind or signed by a retired key. Callers answer "not found" without detail.
var ErrBadToken = errors.New("tracking token does not verify")

// TrackingKey signs and verifies tracking tokens: HMAC-SHA256 under Current, and for tokens
// made before a rotation, Previous (verify only). Links sent in a campaign live as long as the
// mailbox keeps the message, so a rotation keeps the previous key until its links may expire.
type TrackingKey struct {
	Current  []byte
	Previous []byte
}

// LoadTrackingKey reads the signing key from path and, if previousPath is not empty, the
// previous key: each file holds at least MinTrackingKeyLen bytes (raw random bytes, or any
// text of that length: a file of 32+ random characters from a secret manager works too).
// Trailing newlines are not part of the key.
func LoadTrackingKey(path, previousPath string) (TrackingKey, error) {
	read := func(p string) ([]byte, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read tracking key: %w", err)
		}
		b = []byte(strings.TrimRight(string(b), "\r\n"))
		if len(b) < MinTrackingKeyLen {
			return nil, fmt.Errorf("tracking key %s: %d bytes, at least %d required", p, len(b), MinTrackingKeyLen)
		}
		return b, nil
	}
	var k TrackingKey
	var err error
	if k.Current, err = read(path); err != nil {
		return TrackingKey{}, err
	}
	if previousPath != "" {
		if k.Previous, err = read(previousPath); err != nil {
			return TrackingKey{}, err
		}
	}
	return k, nil
}

// Sign returns the token of kind for ref (and target, for a click). The layout, before URL-safe
// base64 without padding: version, kind, len(ref), ref, target, then the first 16 bytes of the
// HMAC-SHA256 of everything before it. ref must be 1-MaxRefLen printable ASCII characters.
func (k TrackingKey) Sign(kind TokenKind, ref, target string) string {
	if !validRef(ref) {
		panic("delivery: tracking token for an invalid ref")
	}
	p := make([]byte, 0, 3+len(ref)+len(target)+tokenMACLen)
	p = append(p, tokenVersion, byte(kind), byte(len(ref)))
	p = append(p, ref...)
	p = append(p, target...)
	p = append(p, mac(k.Current, p)...)
	return base64.RawURLEncoding.EncodeToString(p)
}

func mac(key, payload []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(payload)
	return h.Sum(nil)[:tokenMACLen]
}

// Verify checks a token of kind and returns its ref and target. Any failure is ErrBadToken.
func (k TrackingKey) Verify(kind TokenKind, token string) (ref, target string, err error) {
	if len(token) > maxTokenLen || len(k.Current) == 0 {
		return "", "", ErrBadToken
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) < 3+tokenMACLen {
		return "", "", ErrBadToken
	}
	payload, sig := b[:len(b)-tokenMACLen], b[len(b)-tokenMACLen:]
	ok := hmac.Equal(sig, mac(k.Current, payload))
	if !ok && len(k.Previous) > 0 {
		ok = hmac.Equal(sig, mac(k.Previous, payload))
	}
	if !ok || payload[0] != tokenVersion || TokenKind(payload[1]) != kind {
		return "", "", ErrBadToken
	}
	n := int(payload[2])
	if n == 0 || 3+n > len(payload) {
		return "", "", ErrBadToken
	}
	ref, target = string(payload[3:3+n]), string(payload[3+n:])
	if !validRef(ref) || kind != TokenClick && target != "" || kind == TokenClick && TrackableURL(target) != nil {
		return "", "", ErrBadToken
	}
	return ref, target, nil
}

// TrackableURL reports why target cannot be behind a click redirect (nil if it can): only
// absolute http and https URLs of at most MaxTrackedURL bytes, so a signed link can never
// redirect to javascript:, data: or a relative path.
func TrackableURL(target string) error {
	if len(target) > MaxTrackedURL || !utf8.ValidString(target) {
		return fmt.Errorf("link longer than %d bytes or not utf-8", MaxTrackedURL)
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("link is not an absolute http or https url")
	}
	return nil
}

func validRef(ref string) bool {
	if ref == "" || len(ref) > MaxRefLen {
		return false
	}
	for _, r := range ref {
		if r <= ' ' || r > '~' {
			return false
		}
	}
	return true
}

// TrackingLinks implements Links: tokens under Key, on the public origin of the gateway
// (BaseURL, e.g. https://track.example.com). Paths: /t/c/<token> (click), /t/o/<token>.gif
// (open pixel), /u/<token> (unsubscribe page and RFC 8058 one-click POST).
type TrackingLinks struct {
	BaseURL string
	Key     TrackingKey
}

var _ Links = TrackingLinks{}

// Click returns the redirect URL for target, or target itself when it cannot be tracked (not
// http/https, too long) or ref is not a ref: such links go out untracked rather than broken.
func (l TrackingLinks) Click(ref, target string) string {
	if !validRef(ref) || TrackableURL(target) != nil {
		return target
	}
	return l.base() + "/t/c/" + l.Key.Sign(TokenClick, ref, target)
}

// Open returns the open pixel's URL ("" for a ref that is not one: no pixel).
func (l TrackingLinks) Open(ref string) string {
	if !validRef(ref) {
		return ""
	}
	return l.base() + "/t/o/" + l.Key.Sign(TokenOpen, ref, "") + ".gif"
}

// Unsubscribe returns the recipient's unsubscribe URL (the List-Unsubscribe header's too;
// "" for a ref that is not one).
func (l TrackingLinks) Unsubscribe(ref string) string {
	if !validRef(ref) {
		return ""
	}
	return l.base() + "/u/" + l.Key.Sign(TokenUnsubscribe, ref, "")
}

func (l TrackingLinks) base() string { return strings.TrimRight(l.BaseURL, "/") }
