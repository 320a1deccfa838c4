package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// browserTimeout bounds the browser run (it takes about a minute; events through the whole
// pipeline are waited for up to a minute at a time).
const browserTimeout = 6 * time.Minute

// consoleBrowser runs the console's browser test (e2e/console/console.spec.mjs: Debian's
// Chromium driven by playwright-core) against the mesh: a person's clicks through every screen,
// the numbers the pages show checked against the API. Its output is the test's log. The
// screens' pictures of a run where every step passed go to the system's tmp, or, with
// CM_UPDATE_SCREENSHOTS=1 (make screenshots), to docs/console for the README — so a plain
// make test leaves the working tree as it was.
func consoleBrowser(t *testing.T, env *consoleEnv) {
	dir, err := filepath.Abs("console")
	if err != nil {
		t.Fatal(err)
	}
	chromium := os.Getenv("CM_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	// The test needs them; make test installs them (browser-deps), so missing means a run
	// outside make: say how to get them rather than skip.
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("no Chromium at %s: install it with `make browser-deps` (scripts/browser.sh: apt-get install chromium)", chromium)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("no node on PATH: install it with `make browser-deps` (scripts/browser.sh: apt-get install nodejs npm)")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
		t.Fatalf("no playwright-core in %s/node_modules: install it with `make browser-deps` (scripts/browser.sh: npm ci in e2e/console)", dir)
	}

	screenshots := filepath.Join(os.TempDir(), "campaignmesh-console-browser", "screens")
	if os.Getenv("CM_UPDATE_SCREENSHOTS") == "1" {
		screenshots = filepath.Join(dir, "..", "..", "docs", "console")
	}

	timeout := browserTimeout
	if d, ok := t.Deadline(); ok && time.Until(d)-10*time.Second < timeout {
		timeout = time.Until(d) - 10*time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "console.spec.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"CM_CONSOLE_URL="+env.m.url(""),
		"CM_TENANT="+env.tenant,
		"CM_ADMIN_EMAIL="+env.adminLogin["email"],
		"CM_ADMIN_PASSWORD="+env.adminLogin["password"],
		"CM_ANALYST_EMAIL=ana@acme.example",
		"CM_ANALYST_PASSWORD=ana has a long password",
		"CM_CHROMIUM="+chromium,
		"CM_SCREENSHOTS_DIR="+screenshots,
		"CM_ARTIFACTS_DIR="+filepath.Join(os.TempDir(), "campaignmesh-console-browser"),
		"NO_COLOR=1", "FORCE_COLOR=0", // plain text in the test's log
	)
	cmd.WaitDelay = 10 * time.Second // Chromium's children may keep the output open after a kill
	log := &lineLog{t: t}
	cmd.Stdout, cmd.Stderr = log, log
	start := time.Now()
	err = cmd.Run()
	log.flush()
	t.Logf("browser test: %s", time.Since(start).Round(100*time.Millisecond))
	if ctx.Err() != nil {
		t.Fatalf("the browser test did not finish within %s:\n%s", timeout, strings.Join(log.summary, "\n"))
	}
	if err != nil {
		t.Fatalf("the browser test failed (%v):\n%s", err, strings.Join(log.summary, "\n"))
	}
}

// lineLog writes a command's output to the test's log line by line as it comes (the steps
// print PASS/FAIL/SKIP with their times) and keeps the failures and the summary for the
// failure message.
type lineLog struct {
	t         *testing.T
	mu        sync.Mutex
	partial   []byte
	summary   []string
	inSummary bool
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.line(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
}

func (l *lineLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.line(string(l.partial))
		l.partial = nil
	}
}

func (l *lineLog) line(s string) {
	l.t.Log(s)
	if strings.HasPrefix(s, "SUMMARY") {
		l.inSummary = true
	}
	if l.inSummary || strings.HasPrefix(s, "FAIL") || strings.HasPrefix(s, "  ") || strings.HasPrefix(s, "console.spec:") {
		l.summary = append(l.summary, s)
	}
}
