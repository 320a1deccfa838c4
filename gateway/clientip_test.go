package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestClientIPBehindTrustedProxies(t *testing.T) {
	proxies, err := ParseTrustedProxies("10.0.0.0/8, 192.168.1.7,2001:db8::/32")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"no proxy", "203.0.113.5:4000", nil, "203.0.113.5"},
		{"spoofed header from an untrusted peer", "203.0.113.5:4000", []string{"198.51.100.1"}, "203.0.113.5"},
		{"trusted proxy", "10.1.2.3:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"client forges the left part", "10.1.2.3:4000", []string{"1.1.1.1, 198.51.100.1"}, "198.51.100.1"},
		{"chain of trusted proxies", "10.1.2.3:4000", []string{"6.6.6.6, 198.51.100.1, 192.168.1.7", "10.9.9.9"}, "198.51.100.1"},
		{"every hop trusted", "10.1.2.3:4000", []string{"10.0.0.9"}, "10.0.0.9"},
		{"trusted proxy without header", "10.1.2.3:4000", nil, "10.1.2.3"},
		{"garbage stops the walk", "10.1.2.3:4000", []string{"198.51.100.1, junk, 10.0.0.2"}, "10.0.0.2"},
		{"IPv6 proxy", "[2001:db8::1]:443", []string{"2001:db9::7"}, "2001:db9::7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.peer
			for _, h := range tc.xff {
				r.Header.Add("X-Forwarded-For", h)
			}
			if got := clientIP(r, proxies); got != tc.want {
				t.Fatalf("clientIP = %s, want %s", got, tc.want)
			}
		})
	}
	if _, err := ParseTrustedProxies("10.0.0.0/33"); err == nil {
		t.Fatal("a bad CIDR was accepted")
	}
}

// The rate limit and the address told to the backends follow X-Forwarded-For only from a
// trusted proxy.
func TestRateLimitAndForwardedAddressBehindProxies(t *testing.T) {
	mesh := startEchoMesh(t)
	proxies, _ := ParseTrustedProxies("10.0.0.0/8")
	g, err := New(context.Background(), Config{RateLimit: 1, TrustedProxies: proxies}, mesh.backends)
	if err != nil {
		t.Fatal(err)
	}
	call := func(peer, xff string) int {
		r := httptest.NewRequest("GET", "/v1/campaigns", nil)
		r.RemoteAddr = peer
		r.Header.Set("Authorization", "Bearer any")
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		return w.Code
	}
	// An untrusted client cannot escape its limit by inventing addresses.
	if c := call("203.0.113.5:1", "198.51.100.1"); c != http.StatusOK {
		t.Fatalf("first call: %d", c)
	}
	if got := mesh.lastMetadata().Get("x-forwarded-for"); len(got) != 1 || got[0] != "203.0.113.5" {
		t.Fatalf("backend told the client is %v; want the TCP peer", got)
	}
	if c := call("203.0.113.5:2", "198.51.100.2"); c != http.StatusTooManyRequests {
		t.Fatalf("second call with a new spoofed address: %d, want 429", c)
	}
	// Behind a trusted proxy each forwarded client has its own limit and is named to backends.
	for _, client := range []string{"198.51.100.10", "198.51.100.11"} {
		if c := call("10.0.0.1:1", "6.6.6.6, "+client); c != http.StatusOK {
			t.Fatalf("client %s via the proxy: %d", client, c)
		}
		if got := mesh.lastMetadata().Get("x-forwarded-for"); len(got) != 1 || got[0] != client {
			t.Fatalf("backend told the client is %v; want %s", got, client)
		}
	}
	if c := call("10.0.0.1:2", "198.51.100.10"); c != http.StatusTooManyRequests {
		t.Fatalf("forwarded client over its limit: %d, want 429", c)
	}
}
