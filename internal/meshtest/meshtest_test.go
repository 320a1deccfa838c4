package meshtest_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// fatalTB records a failure and ends its goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func run(f func(tb testing.TB)) string {
	tb := &fatalTB{}
	done := make(chan struct{})
	go func() { defer close(done); f(tb) }()
	<-done
	return tb.msg
}

func TestEventually(t *testing.T) {
	var calls atomic.Int32
	if msg := run(func(tb testing.TB) {
		meshtest.Eventually(tb, 5*time.Second, func() bool { return calls.Add(1) == 3 }, "never")
	}); msg != "" || calls.Load() != 3 {
		t.Fatalf("a condition that comes true: %q after %d calls", msg, calls.Load())
	}
	msg := run(func(tb testing.TB) {
		meshtest.Eventually(tb, 30*time.Millisecond, func() bool { return false }, "campaign %s not %s", "c1", "active")
	})
	if msg != "campaign c1 not active (not within 30ms)" {
		t.Fatalf("failure message %q", msg)
	}
}

func TestClock(t *testing.T) {
	start := time.Date(2026, 3, 8, 9, 0, 0, 0, time.UTC)
	c := meshtest.NewClock(start)
	c.Advance(time.Minute)
	if got := c.Now(); !got.Equal(start.Add(time.Minute)) {
		t.Fatalf("now %v", got)
	}
}

func TestIssuerTokensVerify(t *testing.T) {
	iss := meshtest.NewIssuer(t)
	v := iss.Verifier()
	ctx := context.Background()
	p, err := v.Verify(ctx, iss.Token(t, "t1", rbac.Manager, "u1"))
	if err != nil || p.TenantID != "t1" || p.Role != rbac.Manager || p.Subject != "u1" || !p.Has(rbac.CampaignsWrite) {
		t.Fatalf("manager token: %+v %v", p, err)
	}
	if p, err := v.Verify(ctx, iss.Token(t, "t1", rbac.PlatformOperator, "op")); err != nil || p.TenantID != "" {
		t.Fatalf("operator token: %+v %v", p, err)
	}
	expired := iss.Claims("t1", rbac.Viewer, "u2")
	expired.ExpiresAt = nil
	if _, err := v.Verify(ctx, iss.Sign(t, expired)); err == nil {
		t.Fatal("a token without expiry verified")
	}
	if _, err := authn.NewJWTVerifier(meshtest.NewIssuer(t).Keys()).Verify(ctx, iss.Token(t, "t1", rbac.Viewer, "u")); err == nil {
		t.Fatal("another issuer's key verified the token")
	}
	md, _ := metadata.FromOutgoingContext(meshtest.Bearer(ctx, "tok"))
	if got := strings.Join(md.Get("authorization"), ","); got != "Bearer tok" {
		t.Fatalf("authorization %q", got)
	}
}
