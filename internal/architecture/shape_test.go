package architecture

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/campaignmesh/campaignmesh"

// forbidden are what a domain package must not depend on, even indirectly: the gRPC serving
// layer and the generated API. Domains declare ports; grpcapi and the adapters depend on them.
var forbidden = []string{
	module + "/internal/platform/grpcserver",
	module + "/internal/platform/access",
	module + "/gen/",
}

// allowed are the deliberate exceptions, each stated in the package doc of its domain.
var allowed = map[string][]string{
	// ingest validates and enriches the wire messages themselves: converting up to 1,000 events
	// a request into other structs and back would cost throughput on the hottest path.
	// (The wire messages' file imports the access options, hence access/v1.)
	"services/ingest": {module + "/gen/campaignmesh/ingest/v1", module + "/gen/campaignmesh/access/v1"},
}

// repoRoot is the module root (two levels up from this package).
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(wd, "..", "..")
}

// domains are the services' domain packages: services/<svc> for every folder that has Go code.
func domains(t *testing.T, root string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, "services"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if matches, _ := filepath.Glob(filepath.Join(root, "services", e.Name(), "*.go")); e.IsDir() && len(matches) > 0 {
			out = append(out, "services/"+e.Name())
		}
	}
	if len(out) < 4 {
		t.Fatalf("found only %v under services/", out)
	}
	return out
}

func TestDomainPackagesDependOnNoServingLayerOrGeneratedAPI(t *testing.T) {
	root := repoRoot(t)
	for _, dom := range domains(t, root) {
		t.Run(dom, func(t *testing.T) {
			cmd := exec.Command("go", "list", "-deps", "./"+dom)
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps ./%s: %v\n%s", dom, err, out)
			}
			for _, dep := range strings.Fields(string(out)) {
				for _, bad := range forbidden {
					if !strings.HasPrefix(dep, bad) || contains(allowed[dom], dep) {
						continue
					}
					t.Errorf("%s depends on %s", dom, dep)
				}
			}
		})
	}
}

// Every service keeps its parts in the same places: the handler in grpcapi, the wiring in app,
// the command in cmd/<svc>.
func TestEveryServiceHasTheSameParts(t *testing.T) {
	root := repoRoot(t)
	for _, dom := range domains(t, root) {
		svc := filepath.Base(dom)
		for _, part := range []string{"grpcapi", "app", filepath.Join("cmd", svc)} {
			if matches, _ := filepath.Glob(filepath.Join(root, dom, part, "*.go")); len(matches) == 0 {
				t.Errorf("%s has no %s package", dom, part)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
