//go:build !chaos

package main

import (
	"strings"
	"testing"
)

// The normal binary has no fault flag: given one it refuses to start, and the flag's
// environment variable switches nothing on.
func TestNormalBuildHasNoFaultFlag(t *testing.T) {
	_, err := parse(append([]string{"-fault-exit-after-inserts", "1"}, requiredArgs...))
	if err == nil || !strings.Contains(err.Error(), "flag provided but not defined: -fault-exit-after-inserts") {
		t.Fatalf("parse with -fault-exit-after-inserts: err = %v, want the flag refused", err)
	}
	t.Setenv("CM_ANALYTICS_FAULT_EXIT_AFTER_INSERTS", "1")
	s, err := parse(requiredArgs)
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.WrapSink != nil {
		t.Fatal("the normal build wraps the writer's sink")
	}
}
