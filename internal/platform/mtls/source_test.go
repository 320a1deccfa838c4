package mtls_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
)

// handshake runs a real TLS 1.3 handshake over loopback and returns the server's view of the
// client identity, or the first error either side saw.
func handshake(t *testing.T, server, client *tls.Config) (string, error) {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	type result struct {
		svc string
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		svc, err := mtls.ServiceOf(tc.ConnectionState().VerifiedChains[0][0])
		_, _ = tc.Write([]byte("ok"))
		done <- result{svc: svc, err: err}
	}()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", lis.Addr().String(), client)
	if err == nil {
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		// TLS 1.3 clients learn of a rejected certificate only on their first read.
		_, err = io.ReadFull(conn, make([]byte, 2))
	}
	r := <-done
	if r.err != nil {
		return "", r.err
	}
	return r.svc, err
}

func TestMutualTLS(t *testing.T) {
	ca := mtlstest.NewCA(t)
	otherCA := mtlstest.NewCA(t)
	auth := mtlstest.Source(t, ca, "auth")
	gateway := mtlstest.Source(t, ca, "gateway")

	t.Run("verified peer identity", func(t *testing.T) {
		svc, err := handshake(t, auth.ServerConfig(), gateway.ClientConfig("auth"))
		if err != nil || svc != "gateway" {
			t.Fatalf("got %q, %v; want gateway", svc, err)
		}
	})
	t.Run("client without certificate is refused", func(t *testing.T) {
		cfg := gateway.ClientConfig("auth")
		cfg.GetClientCertificate = nil
		if _, err := handshake(t, auth.ServerConfig(), cfg); err == nil {
			t.Fatal("handshake succeeded without a client certificate")
		}
	})
	t.Run("client from another CA is refused", func(t *testing.T) {
		intruder := mtlstest.Source(t, otherCA, "gateway")
		if _, err := handshake(t, auth.ServerConfig(), intruder.ClientConfig("auth")); err == nil {
			t.Fatal("handshake succeeded with a foreign CA")
		}
	})
	t.Run("client with a foreign SPIFFE ID is refused", func(t *testing.T) {
		certPEM, keyPEM, err := ca.IssueEdge([]string{"localhost"}, time.Hour) // valid chain, no SPIFFE ID
		if err != nil {
			t.Fatal(err)
		}
		src, err := mtls.NewSource(mtlstest.Write(t, ca, certPEM, keyPEM), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := handshake(t, auth.ServerConfig(), src.ClientConfig("auth")); err == nil {
			t.Fatal("handshake succeeded without a SPIFFE ID")
		}
	})
	t.Run("server with the wrong identity is refused by the client", func(t *testing.T) {
		campaigns := mtlstest.Source(t, ca, "campaigns")
		if _, err := handshake(t, campaigns.ServerConfig(), gateway.ClientConfig("auth")); err == nil {
			t.Fatal("client accepted campaigns when it expected auth")
		}
	})
	t.Run("server from another CA is refused by the client", func(t *testing.T) {
		fake := mtlstest.Source(t, otherCA, "auth")
		if _, err := handshake(t, fake.ServerConfig(), gateway.ClientConfig("auth")); err == nil {
			t.Fatal("client accepted a server from a foreign CA")
		}
	})
}

func TestSourceReloadsChangedFiles(t *testing.T) {
	ca := mtlstest.NewCA(t)
	files := mtlstest.Files(t, ca, "auth")
	var logs bytes.Buffer
	src, err := mtls.NewSource(files, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	clock := meshtest.NewClock(time.Now())
	mtls.SetClock(src, clock.Now)
	first := src.Certificate().Leaf
	if first == nil || first.URIs[0].Path != "/auth" {
		t.Fatalf("loaded %v", first)
	}
	// Rotate: a new certificate for another identity lands on disk.
	certPEM, keyPEM, err := ca.IssueService("auth2", time.Hour)
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
	if got := src.Certificate().Leaf.URIs[0].Path; got != "/auth2" {
		t.Fatalf("certificate %s once the check interval passed; want the rotated /auth2", got)
	}
	// A broken file keeps the last good certificate.
	if err := os.WriteFile(files.Cert, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock.Advance(mtls.ReloadCheckInterval) // let the reload interval pass once
	if got := src.Certificate().Leaf.URIs[0].Path; got != "/auth2" {
		t.Fatalf("after a broken file, certificate is %s; want the last good one", got)
	}
	if !strings.Contains(logs.String(), "keeping the previous ones") {
		t.Fatalf("the broken file was not tried:\n%s", logs.String())
	}
}
