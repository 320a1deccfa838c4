package mtls

import (
	"crypto/x509"
	"sync"
	"weak"

	"github.com/prometheus/client_golang/prometheus"
)

// Every Source of the process, by certificate file, for ExpiryCollector. Weak pointers: a source
// nobody uses any more (tests make many) drops out instead of being kept alive by its metric.
var sources = struct {
	mu     sync.Mutex
	byFile map[string]weak.Pointer[Source]
}{byFile: map[string]weak.Pointer[Source]{}}

func track(s *Source) {
	sources.mu.Lock()
	defer sources.mu.Unlock()
	sources.byFile[s.files.Cert] = weak.Make(s)
}

var (
	notAfterDesc = prometheus.NewDesc("tls_certificate_not_after_timestamp_seconds",
		"End of the validity of the certificate the process serves with now (after its reload check), by certificate file.", []string{"file"}, nil)
	notBeforeDesc = prometheus.NewDesc("tls_certificate_not_before_timestamp_seconds",
		"Start of the validity of the certificate the process serves with now (after its reload check), by certificate file.", []string{"file"}, nil)
)

// ExpiryCollector exports the validity of the certificate each Source of the process serves
// with. It reads the certificate in use, not the file: a renewal that never reaches the process
// (a secret mounted with subPath, a failing reload) shows as a certificate running out, which is
// what breaks the mesh. cert-manager's own metrics only see the secret.
type ExpiryCollector struct{}

// Describe implements prometheus.Collector.
func (ExpiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- notAfterDesc; ch <- notBeforeDesc }

// Collect implements prometheus.Collector.
func (ExpiryCollector) Collect(ch chan<- prometheus.Metric) {
	sources.mu.Lock()
	live := make(map[string]*Source, len(sources.byFile))
	for file, p := range sources.byFile {
		if s := p.Value(); s != nil {
			live[file] = s
		} else {
			delete(sources.byFile, file)
		}
	}
	sources.mu.Unlock()
	for file, s := range live {
		cert := s.Certificate() // runs the reload check first, as a handshake would
		leaf := cert.Leaf
		if leaf == nil && len(cert.Certificate) > 0 {
			leaf, _ = x509.ParseCertificate(cert.Certificate[0])
		}
		if leaf == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(notAfterDesc, prometheus.GaugeValue, float64(leaf.NotAfter.Unix()), file)
		ch <- prometheus.MustNewConstMetric(notBeforeDesc, prometheus.GaugeValue, float64(leaf.NotBefore.Unix()), file)
	}
}
