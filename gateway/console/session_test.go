package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
)

// rotatingAuth answers Refresh as auth does: each refresh token works once; a reused one is
// refused (auth then revokes the whole session).
type rotatingAuth struct {
	authv1.AuthServiceClient
	mu      sync.Mutex
	valid   map[string]bool
	n       int
	calls   atomic.Int32
	release chan struct{}
}

func (a *rotatingAuth) Refresh(_ context.Context, in *authv1.RefreshRequest, _ ...grpc.CallOption) (*authv1.LoginResponse, error) {
	a.calls.Add(1)
	if a.release != nil {
		<-a.release
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.valid[in.GetRefreshToken()] {
		return nil, status.Error(codes.Unauthenticated, "invalid, expired or revoked refresh token")
	}
	delete(a.valid, in.GetRefreshToken())
	a.n++
	next := "cmr_" + strings.Repeat("x", a.n)
	a.valid[next] = true
	now := time.Now()
	return &authv1.LoginResponse{AccessToken: "access-" + next, ExpireTime: timestamppb.New(now.Add(15 * time.Minute)),
		RefreshToken: next, RefreshExpireTime: timestamppb.New(now.Add(24 * time.Hour))}, nil
}

func expiringSession(refresh string) session {
	now := time.Now()
	return session{Tenant: "acme", Access: "old", AccessExpiry: now.Add(10 * time.Second).Unix(),
		Refresh: refresh, RefreshExpiry: now.Add(time.Hour).Unix(), CSRF: "form-token"}
}

func cookieRequest(t *testing.T, ss *sessions, s session) *http.Request {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := ss.write(rec, s); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/console/", nil)
	for _, c := range rec.Result().Cookies() {
		r.AddCookie(c)
	}
	return r
}

// Concurrent requests with the same expiring cookie share one rotation: none of them presents
// the used refresh token again (which auth would take for theft and end the session).
func TestConcurrentRequestsShareOneRenewal(t *testing.T) {
	auth := &rotatingAuth{valid: map[string]bool{"cmr_first": true}, release: make(chan struct{})}
	ss, err := newSessions(nil, auth)
	if err != nil {
		t.Fatal(err)
	}
	s := expiringSession("cmr_first")
	var wg sync.WaitGroup
	got := make([]session, 8)
	errs := make([]error, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = ss.load(context.Background(), httptest.NewRecorder(), cookieRequest(t, ss, s))
		}()
	}
	meshtest.Eventually(t, 10*time.Second, func() bool { return auth.calls.Load() > 0 }, "the first renewal in flight")
	close(auth.release)
	wg.Wait()
	for i := range got {
		if errs[i] != nil || got[i].Access != "access-cmr_x" || got[i].CSRF != "form-token" {
			t.Fatalf("request %d: %+v %v", i, got[i], errs[i])
		}
	}
	// A request still carrying the old cookie a moment later gets the same renewal.
	again, err := ss.load(context.Background(), httptest.NewRecorder(), cookieRequest(t, ss, s))
	if err != nil || again.Refresh != "cmr_x" {
		t.Fatalf("late request: %+v %v", again, err)
	}
	if n := auth.calls.Load(); n != 1 {
		t.Fatalf("%d Refresh calls, want 1", n)
	}
}

func TestRenewedCookieIsWritten(t *testing.T) {
	auth := &rotatingAuth{valid: map[string]bool{"cmr_first": true}}
	ss, _ := newSessions(nil, auth)
	rec := httptest.NewRecorder()
	if _, err := ss.load(context.Background(), rec, cookieRequest(t, ss, expiringSession("cmr_first"))); err != nil {
		t.Fatal(err)
	}
	var next session
	cookies := rec.Result().Cookies()
	if len(cookies) != 1 || ss.open(sessionCookie, cookies[0].Value, &next) != nil || next.Refresh != "cmr_x" ||
		!cookies[0].HttpOnly || !cookies[0].Secure || cookies[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("renewed cookie: %+v %+v", cookies, next)
	}
}

func TestRefusedRenewalEndsTheSession(t *testing.T) {
	ss, _ := newSessions(nil, &rotatingAuth{valid: map[string]bool{}})
	if _, err := ss.load(context.Background(), httptest.NewRecorder(), cookieRequest(t, ss, expiringSession("cmr_revoked"))); err == nil {
		t.Fatal("a revoked refresh token still gave a session")
	}
}

func TestSealedValuesCannotBeForgedOrSwapped(t *testing.T) {
	ss, _ := newSessions([]byte(strings.Repeat("k", 32)), nil)
	other, _ := newSessions([]byte(strings.Repeat("o", 32)), nil)
	value, err := ss.seal(sessionCookie, expiringSession("cmr_a"))
	if err != nil {
		t.Fatal(err)
	}
	var s session
	if err := ss.open(sessionCookie, value, &s); err != nil || s.Refresh != "cmr_a" {
		t.Fatalf("open: %v %+v", err, s)
	}
	tampered := []byte(value)
	tampered[len(tampered)/2] ^= 1
	for name, tc := range map[string]struct {
		ss      *sessions
		purpose string
		value   string
	}{
		"tampered":          {ss, sessionCookie, string(tampered)},
		"another key":       {other, sessionCookie, value},
		"flash as session":  {ss, flashCookie, value},
		"empty":             {ss, sessionCookie, ""},
		"oversized":         {ss, sessionCookie, strings.Repeat("A", maxCookieBytes+1)},
		"not base64":        {ss, sessionCookie, "!!!"},
		"shorter than once": {ss, sessionCookie, "AAAA"},
	} {
		if err := tc.ss.open(tc.purpose, tc.value, &s); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
}

func TestSafeNextStaysInTheConsole(t *testing.T) {
	for next, want := range map[string]string{
		"/console/campaigns?state=active": "/console/campaigns?state=active",
		"/console/":                       "/console/",
		"":                                Prefix,
		"https://evil.example/console/":   Prefix,
		"//evil.example/console/":         Prefix,
		"/\\evil.example":                 Prefix,
		"/v1/users":                       Prefix,
		"/console/\r\nSet-Cookie: x":      Prefix,
		"javascript:alert(1)":             Prefix,
	} {
		if got := safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", next, got, want)
		}
	}
}
