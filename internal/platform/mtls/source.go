package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// reloadCheckInterval bounds how often the files are stat'ed; a rotated certificate is in use
// at most this long after it lands on disk.
const reloadCheckInterval = time.Second

// Files names the PEM files of one identity.
type Files struct {
	Cert string // certificate chain
	Key  string // private key
	CA   string // CA bundle that verifies peers (empty for the edge listener)
}

// Source serves the current certificate and CA pool of Files, reloading them when the files
// change: another file behind a name (a Kubernetes secret volume swaps the ..data symlink the
// names lead through; a file renamed over another), or another modification time or size. A
// reload that fails keeps the previous material.
type Source struct {
	files  Files
	logger *slog.Logger
	now    func() time.Time // time.Now; tests step a clock past the check interval

	mu        sync.Mutex
	cert      *tls.Certificate
	pool      *x509.CertPool
	stamp     []os.FileInfo
	lastCheck time.Time
}

// NewSource loads files once and returns a reloading source.
func NewSource(files Files, logger *slog.Logger) (*Source, error) {
	if files.Cert == "" || files.Key == "" {
		return nil, errors.New("certificate and key files are required")
	}
	s := &Source{files: files, logger: logger, now: time.Now}
	if err := s.load(); err != nil {
		return nil, err
	}
	track(s)
	return s, nil
}

// fileStamp is what the files are now, through their symlinks (nil for a file missing).
func (s *Source) fileStamp() []os.FileInfo {
	var stamp []os.FileInfo
	for _, f := range []string{s.files.Cert, s.files.Key, s.files.CA} {
		if f == "" {
			continue
		}
		fi, _ := os.Stat(f)
		stamp = append(stamp, fi)
	}
	return stamp
}

// sameStamp reports whether two stamps are of the same files, unchanged. The file's identity
// counts, not only its time and size: a renewal written as new files can carry the previous
// ones' times (a copy that keeps them, two writes within one clock tick) and sizes.
func sameStamp(a, b []os.FileInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] == nil || b[i] == nil {
			if a[i] != b[i] {
				return false
			}
			continue
		}
		if !os.SameFile(a[i], b[i]) || !a[i].ModTime().Equal(b[i].ModTime()) || a[i].Size() != b[i].Size() {
			return false
		}
	}
	return true
}

func (s *Source) load() error {
	stamp := s.fileStamp()
	cert, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
	if err != nil {
		return fmt.Errorf("load key pair %s: %w", s.files.Cert, err)
	}
	var pool *x509.CertPool
	if s.files.CA != "" {
		pem, err := os.ReadFile(s.files.CA)
		if err != nil {
			return fmt.Errorf("read CA bundle: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("CA bundle %s holds no certificate", s.files.CA)
		}
	}
	s.cert, s.pool, s.stamp = &cert, pool, stamp
	return nil
}

// current returns the certificate and pool, reloading first if the files changed.
func (s *Source) current() (*tls.Certificate, *x509.CertPool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := s.now(); now.Sub(s.lastCheck) >= reloadCheckInterval {
		s.lastCheck = now
		if stamp := s.fileStamp(); !sameStamp(stamp, s.stamp) {
			if err := s.load(); err != nil {
				if s.logger != nil {
					s.logger.Error("reload certificates; keeping the previous ones", "cert", s.files.Cert, "err", err)
				}
			} else if s.logger != nil {
				s.logger.Info("certificates reloaded", "cert", s.files.Cert)
			}
		}
	}
	return s.cert, s.pool
}

// Certificate returns the current certificate (for tests and diagnostics).
func (s *Source) Certificate() *tls.Certificate { c, _ := s.current(); return c }

// ServerConfig is the TLS config of a mesh server: TLS 1.3, client certificate required and
// verified against the CA bundle, and the client must carry a valid SPIFFE ID.
func (s *Source) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := s.current()
			if pool == nil {
				return nil, errors.New("mesh server has no CA bundle")
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    pool,
				NextProtos:   []string{"h2"},
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.VerifiedChains) == 0 {
						return errors.New("client certificate not verified")
					}
					_, err := ServiceOf(cs.VerifiedChains[0][0])
					return err
				},
			}, nil
		},
	}
}

// ClientConfig is the TLS config of a mesh client that expects to reach service: it presents
// its own certificate and accepts only a server certificate chaining to the current CA bundle
// whose SPIFFE ID names service.
func (s *Source) ClientConfig(service string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verification is done below against the reloadable pool and the SPIFFE ID, not a host name.
		InsecureSkipVerify: true, //nolint:gosec // replaced by VerifyConnection
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := s.current()
			return cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return s.verifyServer(cs, service)
		},
	}
}

func (s *Source) verifyServer(cs tls.ConnectionState, service string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server presented no certificate")
	}
	_, pool := s.current()
	if pool == nil {
		return errors.New("mesh client has no CA bundle")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("verify server certificate: %w", err)
	}
	got, err := ServiceOf(leaf)
	if err != nil {
		return err
	}
	if got != service {
		return fmt.Errorf("server identity is %q, want %q", got, service)
	}
	return nil
}

// EdgeServerConfig is the TLS config of the gateway's public listener: the edge certificate
// (reloaded like mesh certificates), no client certificate, HTTP/2 and HTTP/1.1.
func (s *Source) EdgeServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert, _ := s.current()
			return cert, nil
		},
	}
}

// RegisterFlags defines -tls-cert, -tls-key and -tls-ca for the mesh identity of service.
func (f *Files) RegisterFlags(fs *flag.FlagSet, service string) {
	fs.StringVar(&f.Cert, "tls-cert", "", fmt.Sprintf("mesh certificate (PEM; SPIFFE ID %s) (required)", ID(service)))
	fs.StringVar(&f.Key, "tls-key", "", "mesh private key (PEM) (required)")
	fs.StringVar(&f.CA, "tls-ca", "", "mesh CA bundle (PEM) (required)")
}

// Complete reports whether certificate, key and CA bundle are all named.
func (f Files) Complete() bool { return f.Cert != "" && f.Key != "" && f.CA != "" }
