package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

// grpcEdge serves g over TLS with HTTP/2 and returns a campaigns client through it.
func grpcEdge(t *testing.T, g *Gateway) campaignsv1.CampaignServiceClient {
	t.Helper()
	return campaignsv1.NewCampaignServiceClient(edgeConn(t, g))
}

// edgeConn serves g over TLS with HTTP/2 and returns a gRPC connection to it.
func edgeConn(t *testing.T, g *Gateway) *grpc.ClientConn {
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
	return conn
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
func TestGRPCProxyAnswersWithoutTransportText(t *testing.T) {
	g, err := New(context.Background(), Config{MaxBodyBytes: 1024}, startEchoMesh(t).backends)
	if err != nil {
		t.Fatal(err)
	}
	c := grpcEdge(t, g)
	_, err = c.ListCampaigns(context.Background(), &campaignsv1.ListCampaignsRequest{PageToken: strings.Repeat("x", 4096)})
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || strings.Contains(st.Message(), "grpc") {
		t.Fatalf("message over the limit: %v; want RESOURCE_EXHAUSTED without transport text", err)
	}
	// A message within the limit still goes through, on the same connection.
	if _, err := c.ListCampaigns(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer any"), &campaignsv1.ListCampaignsRequest{PageToken: "abc"}); err != nil {
		t.Fatalf("message within the limit: %v", err)
	}
}

// Frames of a client stream pass the size check one by one, and the first one over the limit
// ends the call cleanly.
func TestGRPCStreamFramesThroughTheSizeCheck(t *testing.T) {
	g, err := New(context.Background(), Config{MaxBodyBytes: 1024}, startEchoMesh(t).backends)
	if err != nil {
		t.Fatal(err)
	}
	conn := edgeConn(t, g)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer any")
	for _, tc := range []struct {
		name  string
		sizes []int
		want  codes.Code
	}{
		{"all within the limit", []int{10, 900, 0, 500}, codes.OK},
		{"one over the limit", []int{10, 4000, 10}, codes.ResourceExhausted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ingestv1.NewIngestServiceClient(conn).StreamEvents(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range tc.sizes {
				if err := s.Send(&ingestv1.StreamEventsRequest{Events: []*ingestv1.Event{{Name: strings.Repeat("x", n)}}}); err != nil {
					break // the gateway ended the call; its status comes from Recv
				}
			}
			_ = s.CloseSend()
			_, err = s.Recv()
			if errors.Is(err, io.EOF) {
				err = nil
			}
			if st := status.Convert(err); st.Code() != tc.want || strings.Contains(st.Message(), "grpc") {
				t.Fatalf("stream answered %v; want %v without transport text", err, tc.want)
			}
		})
	}
}
