package authn_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
)

func validClaims() authn.Claims {
	now := time.Now()
	return authn.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: authn.Issuer, Audience: jwt.ClaimStrings{authn.Audience}, Subject: "user-1",
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute)), ID: "jti-1",
		},
		TenantID: "tenant-1",
		Role:     "viewer",
	}
}

func TestJWTVerifier(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	v := authn.NewJWTVerifier(authn.StaticKeys{"k1": pub})
	sign := func(c authn.Claims, kid string, key ed25519.PrivateKey) string {
		s, err := authn.Sign(c, kid, key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	with := func(f func(*authn.Claims)) authn.Claims { c := validClaims(); f(&c); return c }

	good := sign(validClaims(), "k1", priv)
	p, err := v.Verify(context.Background(), good)
	if err != nil {
		t.Fatalf("valid token refused: %v", err)
	}
	if p.TenantID != "tenant-1" || p.Subject != "user-1" || p.Role != "viewer" || !p.Has("campaigns.read") || p.Has("users.manage") || p.Kind != authn.KindAccessToken {
		t.Fatalf("principal = %+v", p)
	}

	// alg=none: header and claims of a valid token, no signature.
	parts := strings.Split(good, ".")
	none := "eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoiazEifQ." + parts[1] + "."
	// HS256 keyed with the Ed25519 public key (the classic algorithm-confusion attack).
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, validClaims())
	hs.Header["kid"] = "k1"
	confused, err := hs.SignedString([]byte(pub))
	if err != nil {
		t.Fatal(err)
	}
	tampered := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))

	bad := map[string]string{
		"alg none":              none,
		"hs256 with public key": confused,
		"expired":               sign(with(func(c *authn.Claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute)) }), "k1", priv),
		"no expiry":             sign(with(func(c *authn.Claims) { c.ExpiresAt = nil }), "k1", priv),
		"wrong issuer":          sign(with(func(c *authn.Claims) { c.Issuer = "someone-else" }), "k1", priv),
		"wrong audience":        sign(with(func(c *authn.Claims) { c.Audience = jwt.ClaimStrings{"other"} }), "k1", priv),
		"unknown kid":           sign(validClaims(), "k2", priv),
		"no kid":                sign(validClaims(), "", priv),
		"bad signature":         sign(validClaims(), "k1", otherPriv),
		"tampered signature":    tampered,
		"unknown role":          sign(with(func(c *authn.Claims) { c.Role = "root" }), "k1", priv),
		"tenant role no tenant": sign(with(func(c *authn.Claims) { c.TenantID = "" }), "k1", priv),
		"operator with tenant":  sign(with(func(c *authn.Claims) { c.Role = "platform_operator" }), "k1", priv),
		"garbage":               "not-a-jwt",
	}
	for name, tok := range bad {
		t.Run(name, func(t *testing.T) {
			if p, err := v.Verify(context.Background(), tok); err == nil {
				t.Fatalf("token accepted: %+v", p)
			}
		})
	}
}

// BenchmarkVerify is the per-request cost of verifying access tokens locally: every call with
// a new token (first) and calls repeating a token (cached).
func BenchmarkVerify(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	ctx := context.Background()
	b.Run("first", func(b *testing.B) {
		toks := make([]string, 512)
		for i := range toks {
			c := validClaims()
			c.ID = fmt.Sprint(i)
			toks[i], _ = authn.Sign(c, "k1", priv)
		}
		i := 0
		for b.Loop() {
			v := authn.NewJWTVerifier(authn.StaticKeys{"k1": pub}) // empty cache
			if _, err := v.Verify(ctx, toks[i%len(toks)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("cached", func(b *testing.B) {
		v := authn.NewJWTVerifier(authn.StaticKeys{"k1": pub})
		tok, _ := authn.Sign(validClaims(), "k1", priv)
		for b.Loop() {
			if _, err := v.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestVerifiedTokensAreCachedUntilExpiry(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	keys := authn.StaticKeys{"k1": pub}
	v := authn.NewJWTVerifier(keys)
	tok, err := authn.Sign(validClaims(), "k1", priv)
	if err != nil {
		t.Fatal(err)
	}
	first, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	delete(keys, "k1") // the key is gone: only a cached verification can still succeed
	again, err := v.Verify(context.Background(), tok)
	if err != nil || again.Subject != first.Subject {
		t.Fatalf("second verification of the same token: %v %v", again, err)
	}
	otherClaims := validClaims()
	otherClaims.Subject = "user-2"
	other, _ := authn.Sign(otherClaims, "k1", priv)
	if _, err := v.Verify(context.Background(), other); err == nil {
		t.Fatal("a token never verified was accepted while its key is gone")
	}
	// A token cached close to its expiry is verified again (and refused once expired).
	short := validClaims()
	short.ExpiresAt = jwt.NewNumericDate(time.Now().Add(2 * time.Second))
	keys["k1"] = pub
	stok, _ := authn.Sign(short, "k1", priv)
	if _, err := v.Verify(context.Background(), stok); err != nil {
		t.Fatal(err)
	}
	delete(keys, "k1")
	if _, err := v.Verify(context.Background(), stok); err == nil {
		t.Fatal("a token within the leeway of its expiry was served from the cache")
	}
}
