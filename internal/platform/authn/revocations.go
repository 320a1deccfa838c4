package authn

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// DefaultRevocationPoll is how often a RevocationList asks auth: the bound, plus one round trip,
// within which a revocation takes effect at a service other than auth.
const DefaultRevocationPoll = time.Second

// ErrRevoked refuses a credential that was revoked after it was issued.
var ErrRevoked = errors.New("credential revoked")

// Revoked is what auth reported revoked recently: the current token epochs of users and
// tenants whose epoch rose, and revoked API key ids.
type Revoked struct {
	Users, Tenants map[string]int64
	APIKeys        map[string]bool
}

// RevocationList holds the revocations a service has heard from auth and refuses the
// principals they name. Each poll replaces the whole list (auth answers every revocation of
// the last token lifetime), so a missed poll is repaired by the next one. While auth cannot be
// reached the last list stays in force; a token issued before a revocation made during that
// time is refused once auth answers again.
type RevocationList struct {
	fetch    func(ctx context.Context) (Revoked, error)
	interval time.Duration
	logger   *slog.Logger

	mu      sync.RWMutex
	revoked Revoked
	heard   time.Time // when the list was last refreshed
}

// NewRevocationList returns a list refreshed by fetch every interval (<= 0: DefaultRevocationPoll).
func NewRevocationList(fetch func(ctx context.Context) (Revoked, error), interval time.Duration) *RevocationList {
	if interval <= 0 {
		interval = DefaultRevocationPoll
	}
	return &RevocationList{fetch: fetch, interval: interval, logger: slog.Default()}
}

// NewRemoteRevocations returns a list fed by the auth service's ListRevocations.
func NewRemoteRevocations(auth Auth, interval time.Duration) *RevocationList {
	return NewRevocationList(auth.Revocations, interval)
}

// WithLogger sets where failed polls are reported (default slog.Default()).
func (l *RevocationList) WithLogger(logger *slog.Logger) *RevocationList { l.logger = logger; return l }

// Refresh fetches the list once.
func (l *RevocationList) Refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(l.interval, 2*time.Second))
	defer cancel()
	r, err := l.fetch(ctx)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.revoked, l.heard = r, time.Now()
	l.mu.Unlock()
	return nil
}

// Run refreshes the list every interval until ctx ends. Failures are logged (at most once a
// minute while they last) and retried; it returns nil when ctx ends.
func (l *RevocationList) Run(ctx context.Context) error {
	t := time.NewTicker(l.interval)
	defer t.Stop()
	var lastWarn time.Time
	for {
		if err := l.Refresh(ctx); err != nil && ctx.Err() == nil && time.Since(lastWarn) > time.Minute {
			l.logger.WarnContext(ctx, "revocation list not refreshed; keeping the last one", "err", err, "heard", l.Heard())
			lastWarn = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Heard returns when the list was last refreshed (zero before the first answer).
func (l *RevocationList) Heard() time.Time {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.heard
}

// CheckRevoked implements RevocationChecker.
func (l *RevocationList) CheckRevoked(_ context.Context, p *Principal) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	r := l.revoked
	if e, ok := r.Tenants[p.TenantID]; ok && p.TenantID != "" && p.TenantEpoch < e {
		return ErrRevoked
	}
	switch p.Kind {
	case KindAccessToken:
		if e, ok := r.Users[p.Subject]; ok && p.UserEpoch < e {
			return ErrRevoked
		}
	case KindAPIKey:
		if r.APIKeys[p.Subject] {
			return ErrRevoked
		}
	}
	return nil
}
