//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package main

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

func TestLockFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "credentials.json.lock")
	unlock, err := lockFile(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	// A cancelled context still gets one attempt, which the held lock refuses.
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := lockFile(cancelled, path); !errors.Is(err, context.Canceled) {
		t.Errorf("second lock: err = %v, want context.Canceled", err)
	}
	unlock()
	unlock2, err := lockFile(cancelled, path)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}
