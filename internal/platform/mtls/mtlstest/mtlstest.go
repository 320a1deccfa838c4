// Package mtlstest issues real mesh certificates for tests.
package mtlstest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
)

// NewCA returns a fresh CA or fails the test.
func NewCA(tb testing.TB) *mtls.CA {
	tb.Helper()
	ca, err := mtls.NewCA("test CA")
	if err != nil {
		tb.Fatal(err)
	}
	return ca
}

// Files writes a certificate for service issued by ca, plus ca's bundle, into a temp dir.
func Files(tb testing.TB, ca *mtls.CA, service string) mtls.Files {
	tb.Helper()
	certPEM, keyPEM, err := ca.IssueService(service, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return Write(tb, ca, certPEM, keyPEM)
}

// Write stores a key pair and ca's bundle in a temp dir.
func Write(tb testing.TB, ca *mtls.CA, certPEM, keyPEM []byte) mtls.Files {
	tb.Helper()
	dir := tb.TempDir()
	f := mtls.Files{Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem"), CA: filepath.Join(dir, "ca.pem")}
	for path, data := range map[string][]byte{f.Cert: certPEM, f.Key: keyPEM, f.CA: ca.PEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return f
}

// Source returns a reloading source for service's certificate issued by ca.
func Source(tb testing.TB, ca *mtls.CA, service string) *mtls.Source {
	tb.Helper()
	src, err := mtls.NewSource(Files(tb, ca, service), nil)
	if err != nil {
		tb.Fatal(err)
	}
	return src
}
