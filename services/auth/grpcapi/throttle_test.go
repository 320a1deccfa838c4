package grpcapi_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

func TestFailedLoginsAreThrottledWithoutRevealingAccounts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *auth.Service) {
		s.WithThrottle(auth.ThrottlePolicy{Window: time.Hour, AccountThreshold: 3, AddressThreshold: 1000, MaxLock: time.Hour})
	})
	f := e.tenantWithRoles(t, "brute")
	ctx := context.Background()
	attempt := func(email, pw string) error {
		_, err := e.client.Login(ctx, &authv1.LoginRequest{Tenant: "brute", Email: email, Password: pw})
		return err
	}
	for _, email := range []string{"viewer@brute.example", "nobody@brute.example"} {
		for i := 1; i <= 3; i++ {
			if err := attempt(email, "wrong password"); status.Code(err) != codes.Unauthenticated {
				t.Fatalf("%s failure %d: %v, want Unauthenticated", email, i, err)
			}
		}
		// The 4th attempt is throttled — even with the right password, and the same way
		// whether the account exists or not.
		err := attempt(email, password)
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted || st.Message() != "too many failed logins; retry later" {
			t.Fatalf("%s 4th attempt: %v, want the throttling error", email, err)
		}
		var retry *errdetails.RetryInfo
		for _, d := range st.Details() {
			if r, ok := d.(*errdetails.RetryInfo); ok {
				retry = r
			}
		}
		if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 {
			t.Fatalf("%s: no RetryInfo in %v", email, st.Details())
		}
	}
	// Other accounts are unaffected; an admin unlocks the locked one.
	if err := attempt("analyst@brute.example", password); err != nil {
		t.Fatalf("unrelated account: %v", err)
	}
	if _, err := e.client.UnlockUser(as(f.tokens[rbac.Admin]), &authv1.UnlockUserRequest{Id: f.users[rbac.Viewer].ID}); err != nil {
		t.Fatal(err)
	}
	if err := attempt("viewer@brute.example", password); err != nil {
		t.Fatalf("after unlock: %v", err)
	}
}

func TestFailedLoginsAreThrottledPerClientAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *auth.Service) {
		s.WithThrottle(auth.ThrottlePolicy{Window: time.Hour, AccountThreshold: 1000, AddressThreshold: 4, MaxLock: time.Hour})
	})
	e.tenantWithRoles(t, "spray")
	ctx := context.Background()
	var codesSeen []codes.Code
	for _, email := range []string{"a@spray.example", "b@spray.example", "c@spray.example", "d@spray.example", "admin@spray.example"} {
		_, err := e.client.Login(ctx, &authv1.LoginRequest{Tenant: "spray", Email: email, Password: "wrong password"})
		codesSeen = append(codesSeen, status.Code(err))
	}
	want := []codes.Code{codes.Unauthenticated, codes.Unauthenticated, codes.Unauthenticated, codes.Unauthenticated, codes.ResourceExhausted}
	if !slices.Equal(codesSeen, want) {
		t.Fatalf("password spraying from one address: %v, want %v", codesSeen, want)
	}
}

// Login answers must not reveal whether an account exists, by their time either: an unknown
// account must cost a password hash like a known one. A missing hash would make unknown
// accounts answer many times faster (argon2id takes tens of milliseconds here).
func TestLoginTimingDoesNotRevealAccounts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *auth.Service) {
		s.WithThrottle(auth.ThrottlePolicy{Window: time.Hour, AccountThreshold: 1000, AddressThreshold: 1000, MaxLock: time.Hour})
	})
	e.tenantWithRoles(t, "timing")
	ctx := context.Background()
	median := func(email string) time.Duration {
		var ds []time.Duration
		for i := 0; i < 7; i++ {
			start := time.Now()
			_, _ = e.client.Login(ctx, &authv1.LoginRequest{Tenant: "timing", Email: email, Password: "wrong password"})
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	known, unknown := median("viewer@timing.example"), median("ghost@timing.example")
	if unknown < known/3 || known < unknown/3 {
		t.Fatalf("login for a known account takes %v, for an unknown one %v: the difference reveals accounts", known, unknown)
	}
}
