package k8stest

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

var envInHelp = regexp.MustCompile(`\(env (CM_[A-Z0-9_]+)\)`)

// TestSettingsExist builds each process the manifests run and checks that every CM_* variable
// a container sets is a setting of that binary (its -help lists each with its variable): a
// misspelt or removed setting would otherwise be ignored silently and the default used.
func TestSettingsExist(t *testing.T) {
	objs, err := Build("../overlays/prod")
	if err != nil {
		t.Fatal(err)
	}
	dev, err := Build("../overlays/dev")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	known := map[string]map[string]bool{} // image name → settings
	for _, w := range Workloads(append(objs, dev...)) {
		if w.Pod.Labels["app.kubernetes.io/part-of"] != "campaignmesh" {
			continue
		}
		for _, c := range w.Pod.Spec.Containers {
			svc := strings.TrimPrefix(strings.SplitN(c.Image, ":", 2)[0], "ghcr.io/campaignmesh/")
			if known[svc] == nil {
				known[svc] = helpSettings(t, bin, svc)
			}
			for _, p := range envProblems(w.ID(), c.Env, known[svc]) {
				t.Error(p)
			}
		}
	}
}

// envProblems lists the CM_* variables of env that are not settings of the process.
func envProblems(id string, env []corev1.EnvVar, settings map[string]bool) []string {
	var p []string
	for _, e := range env {
		switch {
		case strings.HasPrefix(e.Name, "INFRA_"), strings.HasPrefix(e.Name, "OTEL_"):
			// INFRA_*: only for $(VAR) expansion in other values; OTEL_*: the SDK's.
		case !strings.HasPrefix(e.Name, "CM_"):
			p = append(p, id+": variable "+e.Name+" is neither a setting nor INFRA_*/OTEL_*")
		case settings[e.Name]:
		default:
			p = append(p, id+": "+e.Name+" is not a setting of the process")
		}
	}
	return p
}

// helpSettings builds the process of image svc (the packages deploy/Dockerfile builds) and
// returns the variables its -help lists.
func helpSettings(t *testing.T, bin, svc string) map[string]bool {
	t.Helper()
	pkg := "./services/" + svc + "/cmd/" + svc
	if svc == "gateway" {
		pkg = "./gateway/cmd/gateway"
	}
	out := filepath.Join(bin, svc)
	build := exec.Command("go", "build", "-o", out, pkg)
	build.Dir = root
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	help, _ := exec.Command(out, "-help").CombinedOutput() // -help exits non-zero in some processes
	settings := map[string]bool{}
	for _, m := range envInHelp.FindAllStringSubmatch(string(help), -1) {
		settings[m[1]] = true
	}
	if len(settings) < 3 {
		t.Fatalf("%s -help lists %d settings:\n%s", svc, len(settings), help)
	}
	return settings
}

func TestEnvProblemsCatchUnknownSetting(t *testing.T) {
	settings := map[string]bool{"CM_AUTH_LISTEN": true}
	for _, name := range []string{"CM_AUTH_LISTN", "AUTH_LISTEN"} {
		if p := envProblems("Deployment/auth", []corev1.EnvVar{{Name: name}}, settings); len(p) == 0 {
			t.Errorf("%s passed", name)
		}
	}
	if p := envProblems("Deployment/auth", []corev1.EnvVar{{Name: "CM_AUTH_LISTEN"}, {Name: "OTEL_SERVICE_NAME"}}, settings); len(p) > 0 {
		t.Error(p)
	}
}
