package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// An account remembers only its newest addresses, and none older than the given age.
func TestKnownLoginAddressesAreBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	const account, keep = "account:acme/ann@acme.example", 10
	oldest := time.Now().Add(-90 * 24 * time.Hour)
	hash := func(i int) []byte { return []byte(fmt.Sprintf("address-%02d", i)) }
	for i := 0; i <= keep; i++ {
		if err := s.RememberLoginAddress(ctx, account, hash(i), keep, oldest); err != nil {
			t.Fatal(err)
		}
	}
	known := func(i int, oldest time.Time) bool {
		t.Helper()
		ok, err := s.KnownLoginAddress(ctx, account, hash(i), oldest)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if known(0, oldest) {
		t.Error("the 11th address did not push out the oldest")
	}
	for i := 1; i <= keep; i++ {
		if !known(i, oldest) {
			t.Errorf("address %d forgotten", i)
		}
	}
	if known(1, time.Now().Add(time.Hour)) {
		t.Error("an address older than the age limit is still known")
	}
	if ok, err := s.KnownLoginAddress(ctx, "account:acme/bob@acme.example", hash(1), oldest); err != nil || ok {
		t.Errorf("another account knows the address: %v %v", ok, err)
	}
	// Remembering again forgets what has aged out.
	var n int
	if err := s.RememberLoginAddress(ctx, account, hash(5), keep, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM login_known_addresses WHERE account = $1`, account).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d rows left after everything aged out, %v", n, err)
	}
}
