package stripe_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/services/billing/stripe"
)

// stripeMockBinary finds stripe-mock: $CM_STRIPE_MOCK, the repository's bin/ (make tools),
// then $PATH. Missing is a failure, never a skip.
func stripeMockBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CM_STRIPE_MOCK"); p != "" {
		return p
	}
	dir, _ := os.Getwd()
	for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			if p := filepath.Join(d, "bin", "stripe-mock"); fileExists(p) {
				return p
			}
		}
	}
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		return p
	}
	t.Fatal("stripe-mock not found: run `make tools` (or `GOBIN=$PWD/bin go install github.com/stripe/stripe-mock@v0.203.0`) in the repository, or set CM_STRIPE_MOCK")
	return ""
}

func fileExists(p string) bool { st, err := os.Stat(p); return err == nil && !st.IsDir() }

// startStripeMock runs stripe-mock on a Unix socket of the test's own and returns a client of
// it: stripe-mock validates each request against Stripe's OpenAPI spec (400 on an unknown or
// missing parameter), so a passing call proves the request's shape.
func startStripeMock(t *testing.T) *stripe.Client {
	t.Helper()
	bin := stripeMockBinary(t)
	sock := filepath.Join(t.TempDir(), "stripe-mock.sock")
	cmd := exec.Command(bin, "-http-unix", sock)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start stripe-mock: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	meshtest.Eventually(t, 30*time.Second, func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "stripe-mock listens on %s", sock)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	c, err := stripe.New(stripe.Config{BaseURL: "http://stripe-mock", APIKey: "sk_test_123", HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestShapesAgainstStripeMock(t *testing.T) {
	c := startStripeMock(t)
	ctx := context.Background()
	if _, err := c.ReportMeterEvent(ctx, stripe.MeterEvent{
		EventName: "cm_events_accepted", CustomerID: "cus_123", Value: 7,
		Identifier: "cm_t_events_accepted_20261129_0_7", Timestamp: time.Now().Add(-time.Minute),
	}); err != nil {
		t.Fatalf("meter event: %v", err)
	}
	meters, err := c.ListMeters(ctx)
	if err != nil || len(meters) == 0 || meters[0].ID == "" {
		t.Fatalf("meters %+v err %v", meters, err)
	}
	day := time.Now().UTC().Truncate(24 * time.Hour)
	if _, err := c.MeterEventSummaries(ctx, meters[0].ID, "cus_123", day.AddDate(0, 0, -2), day); err != nil {
		t.Fatalf("event summaries: %v", err)
	}
}
