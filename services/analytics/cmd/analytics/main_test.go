package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

const writerfaultPkg = "github.com/campaignmesh/campaignmesh/services/analytics/writer/writerfault"

// The fault injection is linked into the chaos build only: the binary that ships cannot crash
// itself on purpose whatever its flags or environment.
func TestOnlyTheChaosBuildLinksFaultInjection(t *testing.T) {
	deps := func(args ...string) []string {
		t.Helper()
		out, err := exec.Command("go", append(append([]string{"list"}, args...), "-deps", ".")...).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %v: %v\n%s", args, err, out)
		}
		return strings.Fields(string(out))
	}
	if slices.Contains(deps(), writerfaultPkg) {
		t.Errorf("the normal build of analytics links %s", writerfaultPkg)
	}
	if !slices.Contains(deps("-tags", "chaos"), writerfaultPkg) {
		t.Errorf("the chaos build of analytics does not link %s", writerfaultPkg)
	}
}

// requiredArgs are the flags every start needs.
var requiredArgs = []string{"-tls-cert", "c.pem", "-tls-key", "k.pem", "-tls-ca", "ca.pem", "-nats-user", ""}

// The writer's dedup window is at least a day (a client's retries are dropped that long) and the
// filter's capacity bounded; the defaults are 48 h and 50 million events.
func TestDedupFlags(t *testing.T) {
	s, err := parse(requiredArgs)
	if err != nil {
		t.Fatal(err)
	}
	if w := s.cfg.Writer; w.DedupWindow != 48*time.Hour || w.DedupCapacity != 50_000_000 {
		t.Errorf("defaults: window %s, capacity %d; want 48h and 50000000", w.DedupWindow, w.DedupCapacity)
	}
	s, err = parse(append([]string{"-dedup-window", "72h", "-dedup-capacity", "1000000"}, requiredArgs...))
	if err != nil {
		t.Fatal(err)
	}
	if w := s.cfg.Writer; w.DedupWindow != 72*time.Hour || w.DedupCapacity != 1_000_000 {
		t.Errorf("set: window %s, capacity %d; want 72h and 1000000", w.DedupWindow, w.DedupCapacity)
	}
	for _, args := range [][]string{{"-dedup-window", "23h"}, {"-dedup-window", "721h"}, {"-dedup-capacity", "999"}, {"-dedup-capacity", "4000000001"}} {
		if _, err := parse(append(args, requiredArgs...)); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("parse %v: err = %v, want it refused naming %s", args, err, args[0])
		}
	}
}
