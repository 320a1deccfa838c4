// Package meshtest holds what tests of every service share: waiting on a condition
// (Eventually), a clock the test steps (Clock), and access tokens signed as the auth service
// signs them (Issuer). Starters that build a service under test through its app package live
// here too, one file per service.
package meshtest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/metadata"

	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// Eventually polls cond until it holds and fails tb with the message when it still does not
// after timeout. It polls often at first and less often later (10 ms doubling up to 250 ms), so
// quick conditions pass quickly and slow ones do not hammer what they read.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	tb.Helper()
	if !Within(timeout, cond) {
		tb.Fatalf(format+" (not within %s)", append(args, timeout)...)
	}
}

// Within polls cond (10 ms, doubling to 250 ms) until it holds or timeout passes, and reports
// whether it held: Eventually for a test that does more than fail when it does not, or for a
// wait whose end is not a failure (holding something open for at most timeout).
func Within(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for wait := 10 * time.Millisecond; !cond(); wait = min(2*wait, 250*time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait) // polling a condition under a deadline
	}
	return true
}

// Clock is a clock that only moves when the test says so, for code that takes a
// `now func() time.Time`. It is safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock standing at start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Issuer signs access tokens as the auth service does, with its own Ed25519 key, for servers
// under test that verify tokens with Keys (authn.NewJWTVerifier(issuer.Keys())).
type Issuer struct {
	kid  string
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

// NewIssuer returns an issuer with a fresh key.
func NewIssuer(tb testing.TB) *Issuer {
	tb.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return &Issuer{kid: "meshtest", pub: pub, priv: priv}
}

// Keys returns the key set that verifies the issuer's tokens.
func (i *Issuer) Keys() authn.StaticKeys { return authn.StaticKeys{i.kid: i.pub} }

// Verifier returns a verifier of the issuer's tokens (for grpcserver.WithVerifier).
func (i *Issuer) Verifier() authn.Verifier {
	return authn.Verifier{Tokens: authn.NewJWTVerifier(i.Keys())}
}

// Claims returns the claims of a token of subject with role in tenant, valid for an hour from
// now (the tenant is dropped for a platform operator, who acts above tenants). Change them and
// Sign them for an unusual token.
func (i *Issuer) Claims(tenant string, role rbac.Role, subject string) authn.Claims {
	if !role.TenantScoped() {
		tenant = ""
	}
	now := time.Now()
	return authn.Claims{
		RegisteredClaims: jwt.RegisteredClaims{Issuer: authn.Issuer, Audience: jwt.ClaimStrings{authn.Audience}, Subject: subject,
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))},
		TenantID: tenant, Role: string(role),
	}
}

// Sign signs claims with the issuer's key.
func (i *Issuer) Sign(tb testing.TB, claims authn.Claims) string {
	tb.Helper()
	tok, err := authn.Sign(claims, i.kid, i.priv)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// Token returns an access token of subject with role in tenant, valid for an hour.
func (i *Issuer) Token(tb testing.TB, tenant string, role rbac.Role, subject string) string {
	tb.Helper()
	return i.Sign(tb, i.Claims(tenant, role, subject))
}

// Bearer returns a context whose outgoing calls carry token as their credential.
func Bearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}
