package mtls_test

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
)

// secretVolume lays out a Kubernetes secret volume (what cert-manager's <svc>-tls secret
// becomes when mounted without subPath) as the kubelet's atomic writer does: the files live in
// a timestamped directory, ..data links to it, and each key's name links through ..data.
type secretVolume struct {
	t   *testing.T
	dir string
}

func newSecretVolume(t *testing.T, files map[string][]byte) *secretVolume {
	v := &secretVolume{t: t, dir: t.TempDir()}
	v.update("..2026_11_29_10_00_00.123", files, nil)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

// update writes files into a new timestamped directory and swaps ..data to it in one rename,
// then removes the previous directory, as the kubelet does when the secret changes. Files named
// in mtimes get that modification time before the swap.
func (v *secretVolume) update(ts string, files map[string][]byte, mtimes map[string]time.Time) {
	t := v.t
	t.Helper()
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(v.dir, ts, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if mtime, ok := mtimes[name]; ok {
			if err := os.Chtimes(filepath.Join(v.dir, ts, name), mtime, mtime); err != nil {
				t.Fatal(err)
			}
		}
	}
	old, _ := os.Readlink(filepath.Join(v.dir, "..data"))
	if err := os.Symlink(ts, filepath.Join(v.dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(v.dir, "..data_tmp"), filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

func (v *secretVolume) files() mtls.Files {
	return mtls.Files{Cert: filepath.Join(v.dir, "tls.crt"), Key: filepath.Join(v.dir, "tls.key"), CA: filepath.Join(v.dir, "ca.crt")}
}

// A certificate renewed in a mounted secret (the kubelet swaps ..data to a new directory;
// the file names stay symlinks that never change) is served within seconds, without restart.
func TestSourceReloadsASecretVolumeUpdate(t *testing.T) {
	ca := mtlstest.NewCA(t)
	secret := func() map[string][]byte {
		certPEM, keyPEM, err := ca.IssueService("auth", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": ca.PEM}
	}
	vol := newSecretVolume(t, secret())
	src, err := mtls.NewSource(vol.files(), nil)
	if err != nil {
		t.Fatal(err)
	}
	first := src.Certificate().Leaf.SerialNumber

	renewed := secret()
	vol.update("..2026_11_29_10_40_00.456", renewed, nil)
	block, _ := pem.Decode(renewed["tls.crt"])
	if block == nil {
		t.Fatal("renewed certificate: no PEM block")
	}
	want, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if want.SerialNumber.Cmp(first) == 0 {
		t.Fatal("the renewed certificate has the first one's serial")
	}
	meshtest.Eventually(t, 10*time.Second, func() bool {
		return src.Certificate().Leaf.SerialNumber.Cmp(want.SerialNumber) == 0
	}, "the renewed certificate is served")
}

// A renewal is seen even when its files have the size and modification time of the previous
// ones (a copy that keeps times, two updates within the file system's clock tick): the files
// behind the names changed.
func TestSourceReloadsASecretVolumeUpdateOfTheSameSizeAndTime(t *testing.T) {
	ca := mtlstest.NewCA(t)
	issue := func() map[string][]byte {
		certPEM, keyPEM, err := ca.IssueService("auth", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": ca.PEM}
	}
	first := issue()
	vol := newSecretVolume(t, first)
	src, err := mtls.NewSource(vol.files(), nil)
	if err != nil {
		t.Fatal(err)
	}
	served := src.Certificate().Leaf.SerialNumber
	// A renewal whose files have the sizes of the first (signatures vary by a byte or two).
	var renewed map[string][]byte
	for range 1000 {
		if r := issue(); len(r["tls.crt"]) == len(first["tls.crt"]) && len(r["tls.key"]) == len(first["tls.key"]) {
			renewed = r
			break
		}
	}
	if renewed == nil {
		t.Fatal("no renewal of the same size in 1000 tries")
	}
	mtimes := map[string]time.Time{}
	for name := range first {
		fi, err := os.Stat(filepath.Join(vol.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		mtimes[name] = fi.ModTime()
	}
	vol.update("..2026_11_29_10_40_00.456", renewed, mtimes)
	block, _ := pem.Decode(renewed["tls.crt"])
	want, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if want.SerialNumber.Cmp(served) == 0 {
		t.Fatal("the renewed certificate has the first one's serial")
	}
	meshtest.Eventually(t, 10*time.Second, func() bool {
		return src.Certificate().Leaf.SerialNumber.Cmp(want.SerialNumber) == 0
	}, "the renewed certificate is served")
}
