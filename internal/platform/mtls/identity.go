// Package mtls gives every process its mesh identity: an X.509 certificate whose single URI
// SAN is a SPIFFE ID (spiffe://campaignmesh.local/<service>). Servers require and verify client
// certificates; clients verify the server's SPIFFE ID instead of a host name. Certificates and
// the CA bundle reload from disk when their files change, without a restart.
package mtls

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// TrustDomain is the SPIFFE trust domain of the mesh.
const TrustDomain = "campaignmesh.local"

var serviceName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// ID returns the SPIFFE ID of a mesh service.
func ID(service string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: "/" + service}
}

// ServiceOf returns the service name in a certificate's SPIFFE ID. The certificate must carry
// exactly one URI SAN, in our trust domain, naming a single service.
func ServiceOf(cert *x509.Certificate) (string, error) {
	if len(cert.URIs) != 1 {
		return "", fmt.Errorf("certificate has %d URI SANs, want exactly one SPIFFE ID", len(cert.URIs))
	}
	u := cert.URIs[0]
	if u.Scheme != "spiffe" || u.Host != TrustDomain {
		return "", fmt.Errorf("certificate identity %q is not in trust domain %s", u.String(), TrustDomain)
	}
	name := u.Path
	if len(name) < 2 || !serviceName.MatchString(name[1:]) || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("certificate identity %q does not name a service", u.String())
	}
	return name[1:], nil
}

// PeerService returns the mesh service name of the caller of a gRPC request, taken from its
// verified client certificate.
func PeerService(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", errors.New("no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", errors.New("peer did not use TLS")
	}
	if len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return "", errors.New("peer presented no verified certificate")
	}
	return ServiceOf(info.State.VerifiedChains[0][0])
}
