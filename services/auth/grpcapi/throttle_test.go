package grpcapi_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

func TestFailedLoginsAreThrottledWithoutRevealingAccounts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *auth.Service) {
		s.WithThrottle(auth.ThrottlePolicy{Window: time.Hour, AccountThreshold: 3, AddressThreshold: 1000, MaxLock: time.Hour}).WithClock(frozenClock())
	})
	f := e.tenantWithRoles(t, "brute")
	// The attacker's address: not one the accounts logged in from (tenantWithRoles logs each in).
	ctx := from("203.0.113.7")
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
// account, an unknown tenant and a disabled user must each cost one argon2id verification, like a
// wrong password for a real account. Counting verifications (not timing answers) keeps this
// exact on a loaded machine. Not parallel: the count is per process.
func TestLoginCostsOnePasswordHashWhetherOrNotTheAccountExists(t *testing.T) {
	e := newEnv(t, func(s *auth.Service) {
		s.WithThrottle(auth.ThrottlePolicy{Window: time.Hour, AccountThreshold: 1000, AddressThreshold: 1000, MaxLock: time.Hour})
	})
	f := e.tenantWithRoles(t, "timing")
	if _, err := e.client.DisableUser(as(f.tokens[rbac.Admin]), &authv1.DisableUserRequest{Id: f.users[rbac.Analyst].ID}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ tenant, email, password string }{
		{"timing", "viewer@timing.example", "wrong password"},
		{"timing", "viewer@timing.example", password},
		{"timing", "ghost@timing.example", "wrong password"},
		{"no-such-tenant", "viewer@timing.example", "wrong password"},
		{"timing", "analyst@timing.example", password}, // disabled
	} {
		before := auth.PasswordVerifications()
		_, _ = e.client.Login(context.Background(), &authv1.LoginRequest{Tenant: c.tenant, Email: c.email, Password: c.password})
		if n := auth.PasswordVerifications() - before; n != 1 {
			t.Errorf("login %s/%s verified %d password hashes, want exactly 1", c.tenant, c.email, n)
		}
	}
}

// from is a context whose calls come, as the gateway says, from the client address addr.
func from(addr string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "x-forwarded-for", addr)
}

// asFrom is as(token) from the client address addr.
func asFrom(token, addr string) context.Context {
	return metadata.AppendToOutgoingContext(as(token), "x-forwarded-for", addr)
}

// retryAfter checks that err is the throttling answer with a RetryInfo delay and a retry-after
// header of whole seconds that covers it.
func retryAfter(t *testing.T, what string, err error, header metadata.MD) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("%s: %v, want ResourceExhausted", what, err)
	}
	var delay time.Duration
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			delay = r.GetRetryDelay().AsDuration()
		}
	}
	v := header.Get("retry-after")
	if len(v) != 1 {
		t.Fatalf("%s: retry-after header %q, want one value", what, v)
	}
	secs, perr := strconv.Atoi(v[0])
	if perr != nil || secs <= 0 || time.Duration(secs)*time.Second < delay {
		t.Fatalf("%s: retry-after %q, want whole seconds covering the delay %v", what, v[0], delay)
	}
}

// A stolen access token is no password oracle: wrong current passwords count as failed logins
// of the account, and are throttled the same way (per account and per address).
func TestChangePasswordIsThrottledLikeLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *auth.Service) {
		s.WithThrottle(auth.ThrottlePolicy{Window: time.Hour, AccountThreshold: 3, AddressThreshold: 1000, MaxLock: time.Hour}).WithClock(frozenClock())
	})
	f := e.tenantWithRoles(t, "oracle")
	stolen := f.tokens[rbac.Analyst]
	guess := func(pw string) (metadata.MD, error) {
		var header metadata.MD
		_, err := e.client.ChangePassword(asFrom(stolen, "198.51.100.9"), &authv1.ChangePasswordRequest{CurrentPassword: pw, NewPassword: "the thief's new password"}, grpc.Header(&header))
		return header, err
	}
	for i := 1; i <= 3; i++ {
		if _, err := guess("guess number " + strconv.Itoa(i)); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("guess %d: %v, want InvalidArgument", i, err)
		}
	}
	// Locked, even with the right password; and Login from the same new address is locked too.
	header, err := guess(password)
	retryAfter(t, "4th ChangePassword", err, header)
	_, err = e.client.Login(from("198.51.100.9"), &authv1.LoginRequest{Tenant: "oracle", Email: "analyst@oracle.example", Password: password}, grpc.Header(&header))
	retryAfter(t, "login after the ChangePassword failures", err, header)

	// Per address too: another account's token from a throttled address.
	e2 := newEnv(t, func(s *auth.Service) {
		s.WithThrottle(auth.ThrottlePolicy{Window: time.Hour, AccountThreshold: 1000, AddressThreshold: 2, MaxLock: time.Hour}).WithClock(frozenClock())
	})
	g := e2.tenantWithRoles(t, "spray")
	for i, r := range []rbac.Role{rbac.Viewer, rbac.Analyst} {
		if _, err := e2.client.ChangePassword(asFrom(g.tokens[r], "198.51.100.10"), &authv1.ChangePasswordRequest{CurrentPassword: "wrong", NewPassword: "a new long password"}); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("spray %d: %v", i, err)
		}
	}
	_, err = e2.client.ChangePassword(asFrom(g.tokens[rbac.Manager], "198.51.100.10"), &authv1.ChangePasswordRequest{CurrentPassword: password, NewPassword: "a new long password"}, grpc.Header(&header))
	retryAfter(t, "ChangePassword from a throttled address", err, header)
}

// A successful ChangePassword clears the account's failures like a successful login.
func TestChangePasswordSuccessClearsFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *auth.Service) {
		s.WithThrottle(auth.ThrottlePolicy{Window: time.Hour, AccountThreshold: 3, AddressThreshold: 1000, MaxLock: time.Hour})
	})
	f := e.tenantWithRoles(t, "clears")
	tok := f.tokens[rbac.Viewer]
	for i := 0; i < 2; i++ {
		if _, err := e.client.ChangePassword(as(tok), &authv1.ChangePasswordRequest{CurrentPassword: "wrong", NewPassword: "a new long password"}); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("failure %d: %v", i, err)
		}
	}
	if _, err := e.client.ChangePassword(as(tok), &authv1.ChangePasswordRequest{CurrentPassword: password, NewPassword: "a new long password"}); err != nil {
		t.Fatal(err)
	}
	// Two more failures from a new address stay under the threshold of 3: the count restarted.
	for i := 0; i < 2; i++ {
		_, err := e.client.Login(from("192.0.2.50"), &authv1.LoginRequest{Tenant: "clears", Email: "viewer@clears.example", Password: "wrong"})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("failure after the change %d: %v", i, err)
		}
	}
	if _, err := e.client.Login(from("192.0.2.50"), &authv1.LoginRequest{Tenant: "clears", Email: "viewer@clears.example", Password: "a new long password"}); err != nil {
		t.Fatalf("login after the count restarted: %v", err)
	}
}

// Lockout abuse: whoever knows an email can lock the account; its owner still logs in from an
// address they logged in from before (the per-address throttle still applies there), while a
// new address stays locked out.
func TestLockedAccountStillLogsInFromAKnownAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *auth.Service) {
		s.WithThrottle(auth.ThrottlePolicy{Window: time.Hour, AccountThreshold: 3, AddressThreshold: 3, MaxLock: time.Hour}).WithClock(frozenClock())
	})
	e.tenantWithRoles(t, "dos")
	home, attacker, elsewhere := "192.0.2.10", "203.0.113.66", "192.0.2.99"
	login := func(addr, pw string) (metadata.MD, error) {
		var header metadata.MD
		_, err := e.client.Login(from(addr), &authv1.LoginRequest{Tenant: "dos", Email: "manager@dos.example", Password: pw}, grpc.Header(&header))
		return header, err
	}
	if _, err := login(home, password); err != nil {
		t.Fatal(err)
	}
	// The attacker locks the account (from several addresses, to stay under the address lock).
	for i, addr := range []string{attacker, attacker, "203.0.113.67", "203.0.113.68"} {
		if _, err := login(addr, "wrong"); i < 3 && status.Code(err) != codes.Unauthenticated {
			t.Fatalf("attack %d: %v", i, err)
		}
	}
	header, err := login(elsewhere, password)
	retryAfter(t, "the owner from a new address", err, header)
	if _, err := login(home, password); err != nil {
		t.Fatalf("the owner from a known address: %v", err)
	}
	// The success cleared the account's failures: the new address works again.
	if _, err := login(elsewhere, password); err != nil {
		t.Fatalf("new address after the owner's login: %v", err)
	}
	// A known address is still held by its own throttle.
	for i := 0; i < 3; i++ {
		if _, err := login(home, "wrong"); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("failure %d from home: %v", i, err)
		}
	}
	header, err = login(home, password)
	retryAfter(t, "a known address over its own threshold", err, header)
}

// frozenClock stops the service's time, so that a lock of a second lasts the whole test.
func frozenClock() func() time.Time {
	now := time.Now()
	return func() time.Time { return now }
}
