package mtls_test

import (
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
)

// validity returns the not-before and not-after gauges the collector reports for file.
func validity(t *testing.T, reg *prometheus.Registry, file string) (notBefore, notAfter float64, ok bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetName() != "file" || m.GetLabel()[0].GetValue() != file {
				continue
			}
			switch f.GetName() {
			case "tls_certificate_not_before_timestamp_seconds":
				notBefore, found = m.GetGauge().GetValue(), found+1
			case "tls_certificate_not_after_timestamp_seconds":
				notAfter, found = m.GetGauge().GetValue(), found+1
			}
		}
	}
	return notBefore, notAfter, found == 2
}

// The collector reports the certificate the source serves with, and follows a rotation once the
// reload check has run (a renewed secret that reached the process).
func TestExpiryCollectorReportsTheCertificateInUse(t *testing.T) {
	ca := mtlstest.NewCA(t)
	files := mtlstest.Files(t, ca, "ingest")
	src, err := mtls.NewSource(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := meshtest.NewClock(time.Now())
	mtls.SetClock(src, clock.Now)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(mtls.ExpiryCollector{})

	leaf := src.Certificate().Leaf
	nb, na, ok := validity(t, reg, files.Cert)
	if !ok || na != float64(leaf.NotAfter.Unix()) || nb != float64(leaf.NotBefore.Unix()) {
		t.Fatalf("reported %v..%v (found %v); want %v..%v", nb, na, ok, leaf.NotBefore.Unix(), leaf.NotAfter.Unix())
	}

	// A renewal with a longer lifetime lands on disk: reported once the check interval passed.
	certPEM, keyPEM, err := ca.IssueService("ingest", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files.Key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files.Cert, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	clock.Advance(mtls.ReloadCheckInterval)
	_, renewed, ok := validity(t, reg, files.Cert)
	if !ok || renewed < na+float64(24*time.Hour/time.Second) {
		t.Fatalf("after the renewal, not after is %v (found %v); want the renewed one, a day past %v", renewed, ok, na)
	}
}
