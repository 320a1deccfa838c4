package gateway

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The console gets a client of each backend it has pages for, billing's (the Usage page)
// included; a mesh without billing gives it none (the page says so).
func TestConsoleAPIClients(t *testing.T) {
	conn, err := grpc.NewClient("passthrough:///unused", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	var backends []Backend
	for _, pkg := range []string{"campaignmesh.auth.v1", ingestPackage, "campaignmesh.campaigns.v1", "campaignmesh.analytics.v1",
		"campaignmesh.dsr.v1", billingPackage} {
		backends = append(backends, Backend{Package: pkg, Conn: conn})
	}
	api := consoleAPI(backends)
	if api.Auth == nil || api.Ingest == nil || api.Campaigns == nil || api.Analytics == nil || api.DSR == nil || api.Billing == nil {
		t.Errorf("the console lacks a client: %+v", api)
	}
	if api := consoleAPI(backends[:5]); api.Billing != nil {
		t.Errorf("a mesh without billing gave the console a billing client")
	}
}
