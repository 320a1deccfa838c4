package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
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
