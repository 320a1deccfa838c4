package auth

import (
	"context"
	"strings"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// Login throttling. Failures are counted per account (tenant slug and email, whether or not
// the account exists, so throttling reveals nothing) and per client address, within a window.
// From the threshold-th failure on, each failure locks the key for twice as long as the last
// one, up to a ceiling: with the defaults the 5th failed login of an account locks it for 1 s,
// the 6th for 2 s, the 7th for 4 s, and from the 15th on for 15 min. While locked, every
// attempt (even with the right password) gets RESOURCE_EXHAUSTED with a retry delay. Success
// clears the account's count; a tenant admin can clear it too (UnlockUser). ChangePassword's
// check of the current password goes through the same throttle, so a stolen access token is no
// password oracle.
//
// Anyone who knows an email can keep that account locked by failing on purpose. So the account
// lock does not apply from an address the account logged in from before (the last
// knownAddressLimit addresses within knownAddressAge, stored hashed): the real user, at home or
// at the office, still gets in, and the per-address throttle still bounds guessing from there.
// The price: someone sharing such an address (the same office NAT) is not held by the account
// lock either, only by the address lock.
type ThrottlePolicy struct {
	Window           time.Duration
	AccountThreshold int
	AddressThreshold int
	MaxLock          time.Duration
}

// DefaultThrottle is the login throttling of the auth service.
var DefaultThrottle = ThrottlePolicy{Window: 15 * time.Minute, AccountThreshold: 5, AddressThreshold: 20, MaxLock: 15 * time.Minute}

// lockFor is how long a key is locked after its n-th failure.
func (p ThrottlePolicy) lockFor(n, threshold int) time.Duration {
	if n < threshold {
		return 0
	}
	d := time.Second << min(n-threshold, 20)
	return min(d, p.MaxLock)
}

func accountKey(tenantSlug, email string) string {
	return "account:" + tenantSlug + "/" + strings.ToLower(email)
}

func addressKey(addr string) string { return "address:" + addr }

// Known addresses: how many an account keeps and for how long.
const (
	knownAddressLimit = 10
	knownAddressAge   = 90 * 24 * time.Hour
)

// knownAddressHash is what is stored of a client address an account logged in from: never the
// address itself.
func knownAddressHash(account, clientAddr string) []byte {
	return hashSecret(account + "\x00" + clientAddr)
}

// rememberAddress records a successful login of account from clientAddr.
func (s *Service) rememberAddress(ctx context.Context, account, clientAddr string) error {
	if clientAddr == "" {
		return nil
	}
	return s.store.RememberLoginAddress(ctx, account, knownAddressHash(account, clientAddr), knownAddressLimit, s.now().Add(-knownAddressAge))
}

// checkLoginThrottle refuses an attempt on account from clientAddr while the address is
// locked, or the account is locked and the address is not one it logged in from before.
func (s *Service) checkLoginThrottle(ctx context.Context, account, clientAddr string) error {
	keys := []string{account}
	if clientAddr != "" {
		known, err := s.store.KnownLoginAddress(ctx, account, knownAddressHash(account, clientAddr), s.now().Add(-knownAddressAge))
		if err != nil {
			return err
		}
		keys = []string{addressKey(clientAddr)}
		if !known {
			keys = append(keys, account)
		}
	}
	return s.checkThrottle(ctx, keys)
}

// checkThrottle refuses a login attempt while any of its keys is locked.
func (s *Service) checkThrottle(ctx context.Context, keys []string) error {
	until, err := s.store.LoginLockedUntil(ctx, keys)
	if err != nil {
		return err
	}
	if wait := until.Sub(s.now()); wait > 0 {
		e := apperr.New(apperr.ResourceExhausted, "LOGIN_THROTTLED", "too many failed logins; retry later")
		e.RetryAfter = wait.Round(time.Second) + time.Second
		return e
	}
	return nil
}

// recordFailure counts a failed login against the account and the address.
func (s *Service) recordFailure(ctx context.Context, account, address string) error {
	for key, threshold := range map[string]int{account: s.throttle.AccountThreshold, address: s.throttle.AddressThreshold} {
		if key == "" || key == addressKey("") {
			continue
		}
		n, err := s.store.RecordLoginFailure(ctx, key, s.throttle.Window)
		if err != nil {
			return err
		}
		if lock := s.throttle.lockFor(n, threshold); lock > 0 {
			if err := s.store.LockLogin(ctx, key, s.now().Add(lock)); err != nil {
				return err
			}
		}
	}
	return nil
}
