package gateway

import (
	"context"
	"crypto/tls"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
)

// grpcEdge serves g over TLS with HTTP/2 and returns a campaigns client through it.
func grpcEdge(t *testing.T, g *Gateway) campaignsv1.CampaignServiceClient {
	t.Helper()
	srv := httptest.NewUnstartedServer(g)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	creds := credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}) // the test server's own certificate
	conn, err := grpc.NewClient(strings.TrimPrefix(srv.URL, "https://"), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return campaignsv1.NewCampaignServiceClient(conn)
}

func TestGRPCForwardedAddressBehindProxies(t *testing.T) {
	for _, tc := range []struct {
		name    string
		proxies string
		want    string
	}{
		{"untrusted peer", "", "127.0.0.1"},
		{"trusted peer", "127.0.0.0/8", "198.51.100.20"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mesh := startEchoMesh(t)
			proxies, _ := ParseTrustedProxies(tc.proxies)
			g, err := New(context.Background(), Config{TrustedProxies: proxies}, mesh.backends)
			if err != nil {
				t.Fatal(err)
			}
			ctx := metadata.AppendToOutgoingContext(context.Background(), "x-forwarded-for", "198.51.100.20", "authorization", "Bearer any")
			if _, err := grpcEdge(t, g).ListCampaigns(ctx, &campaignsv1.ListCampaignsRequest{}); err != nil {
				t.Fatal(err)
			}
			if got := mesh.lastMetadata().Get("x-forwarded-for"); len(got) != 1 || got[0] != tc.want {
				t.Fatalf("backend told the client is %v; want %s", got, tc.want)
			}
		})
	}
}
