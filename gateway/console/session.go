package console

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

// The session lives in one cookie the page's scripts cannot read (HttpOnly), sent only over
// TLS (Secure, and the __Host- prefix: no Domain, Path=/) and only on same-site requests
// (SameSite=Strict). Its value is the session sealed with AES-256-GCM under the console's key
// (the cookie's name is the associated data: one sealed value cannot stand in for another), so
// the gateway keeps no session state and any gateway replica holding the key serves it.
const (
	sessionCookie = "__Host-cm_console"
	flashCookie   = "__Host-cm_flash"
	// maxCookieBytes bounds what is opened: a sealed session is well under 2 KB.
	maxCookieBytes = 3072
	// refreshAhead renews the access token this long before it expires.
	refreshAhead = 30 * time.Second
)

// session is what the cookie carries: the caller's tokens and the CSRF token of its forms.
type session struct {
	Tenant        string `json:"t"`
	Email         string `json:"e"` // as typed at sign-in, for the header
	Access        string `json:"a"`
	AccessExpiry  int64  `json:"ae"`
	Refresh       string `json:"r"`
	RefreshExpiry int64  `json:"re"`
	CSRF          string `json:"c"`
}

// sessions seals and opens session cookies and renews their tokens.
type sessions struct {
	aead cipher.AEAD
	auth authv1.AuthServiceClient
	now  func() time.Time

	// Auth rotates refresh tokens and treats a reused one as theft (the whole session is
	// revoked). A page, its live stream and a second tab can all present the same expiring
	// cookie at once, so one renewal per refresh token runs (flight) and its result is kept
	// for the others for a minute (renewed).
	flight  singleflight.Group
	mu      sync.Mutex
	renewed map[[32]byte]renewal
}

type renewal struct {
	s    session
	seen time.Time
}

const renewalMemory = time.Minute

func newSessions(key []byte, auth authv1.AuthServiceClient) (*sessions, error) {
	if len(key) == 0 {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
	}
	k := sha256.Sum256(append([]byte("campaignmesh console session v1\x00"), key...))
	block, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sessions{aead: aead, auth: auth, now: time.Now, renewed: map[[32]byte]renewal{}}, nil
}

// fromLogin makes the session of a successful sign-in.
func (ss *sessions) fromLogin(tenant, email string, tok *authv1.LoginResponse) session {
	return session{Tenant: tenant, Email: email, Access: tok.GetAccessToken(), AccessExpiry: unix(tok.GetExpireTime()),
		Refresh: tok.GetRefreshToken(), RefreshExpiry: unix(tok.GetRefreshExpireTime()), CSRF: randomToken()}
}

func unix(ts *timestamppb.Timestamp) int64 {
	if ts == nil {
		return 0
	}
	return ts.GetSeconds()
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (ss *sessions) seal(purpose string, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, ss.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(ss.aead.Seal(nonce, nonce, plain, []byte(purpose))), nil
}

var errNoSession = errors.New("no session")

func (ss *sessions) open(purpose, value string, v any) error {
	if value == "" || len(value) > maxCookieBytes {
		return errNoSession
	}
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < ss.aead.NonceSize() {
		return errNoSession
	}
	plain, err := ss.aead.Open(nil, raw[:ss.aead.NonceSize()], raw[ss.aead.NonceSize():], []byte(purpose))
	if err != nil {
		return errNoSession
	}
	if json.Unmarshal(plain, v) != nil {
		return errNoSession
	}
	return nil
}

// write sets the session cookie; it lasts as long as the refresh token.
func (ss *sessions) write(w http.ResponseWriter, s session) error {
	value, err := ss.seal(sessionCookie, s)
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: value, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, Expires: time.Unix(s.RefreshExpiry, 0)})
	return nil
}

func clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
}

// load returns the request's session with a usable access token, renewing it (and rewriting
// the cookie) when it is about to expire. errNoSession: sign in again.
func (ss *sessions) load(ctx context.Context, w http.ResponseWriter, r *http.Request) (session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, errNoSession
	}
	var s session
	if err := ss.open(sessionCookie, c.Value, &s); err != nil {
		return session{}, err
	}
	now := ss.now()
	if now.Add(refreshAhead).Unix() < s.AccessExpiry {
		return s, nil
	}
	if now.Unix() >= s.RefreshExpiry {
		return session{}, errNoSession
	}
	renewedSession, err := ss.renew(ctx, s)
	if err != nil {
		return session{}, err
	}
	if err := ss.write(w, renewedSession); err != nil {
		return session{}, err
	}
	return renewedSession, nil
}

func (ss *sessions) renew(ctx context.Context, s session) (session, error) {
	id := sha256.Sum256([]byte(s.Refresh))
	if got, ok := ss.recall(id); ok {
		return got, nil
	}
	v, err, _ := ss.flight.Do(string(id[:]), func() (any, error) {
		if got, ok := ss.recall(id); ok { // renewed between the check above and this flight
			return got, nil
		}
		// Not the request's context: a browser that goes away must not abandon a rotation
		// that the others waiting on it need.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		tok, err := ss.auth.Refresh(rctx, &authv1.RefreshRequest{RefreshToken: s.Refresh})
		if err != nil {
			return nil, err
		}
		next := ss.fromLogin(s.Tenant, s.Email, tok)
		next.CSRF = s.CSRF // the open forms stay valid
		ss.remember(id, next)
		return next, nil
	})
	if err != nil {
		return session{}, err
	}
	return v.(session), nil
}

func (ss *sessions) recall(id [32]byte) (session, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	got, ok := ss.renewed[id]
	return got.s, ok && ss.now().Sub(got.seen) < renewalMemory
}

func (ss *sessions) remember(id [32]byte, s session) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := ss.now()
	for k, v := range ss.renewed {
		if now.Sub(v.seen) >= renewalMemory {
			delete(ss.renewed, k)
		}
	}
	ss.renewed[id] = renewal{s: s, seen: now}
}

// validCSRF reports whether a form's token is its session's.
func validCSRF(s session, token string) bool {
	return s.CSRF != "" && subtle.ConstantTimeCompare([]byte(s.CSRF), []byte(token)) == 1
}

// flash is a one-time message shown on the next page (after a redirect).
type flash struct {
	Kind string `json:"k"` // "ok" or "error"
	Text string `json:"t"`
	// Secret is shown once, e.g. a new API key's secret (never in a URL or a log).
	Secret string `json:"s,omitempty"`
}

func (ss *sessions) setFlash(w http.ResponseWriter, f flash) {
	value, err := ss.seal(flashCookie, f)
	if err != nil {
		return
	}
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: value, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: 60})
}

func (ss *sessions) takeFlash(w http.ResponseWriter, r *http.Request) *flash {
	c, err := r.Cookie(flashCookie)
	if err != nil {
		return nil
	}
	clearCookie(w, flashCookie)
	var f flash
	if ss.open(flashCookie, c.Value, &f) != nil {
		return nil
	}
	return &f
}
