package mtls

import (
	"crypto/x509"
	"net/url"
	"testing"
)

func TestServiceOf(t *testing.T) {
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name    string
		uris    []*url.URL
		want    string
		wantErr bool
	}{
		{"valid", []*url.URL{u("spiffe://campaignmesh.local/auth")}, "auth", false},
		{"no uri", nil, "", true},
		{"two uris", []*url.URL{u("spiffe://campaignmesh.local/auth"), u("spiffe://campaignmesh.local/gateway")}, "", true},
		{"other trust domain", []*url.URL{u("spiffe://evil.example/auth")}, "", true},
		{"not spiffe", []*url.URL{u("https://campaignmesh.local/auth")}, "", true},
		{"nested path", []*url.URL{u("spiffe://campaignmesh.local/ns/auth")}, "", true},
		{"empty path", []*url.URL{u("spiffe://campaignmesh.local")}, "", true},
		{"query", []*url.URL{u("spiffe://campaignmesh.local/auth?x=1")}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ServiceOf(&x509.Certificate{URIs: tt.uris})
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ServiceOf = %q, %v; want %q, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
