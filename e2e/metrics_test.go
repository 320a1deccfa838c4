package e2e

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

// Right after start, before anyone has called it, every service's /metrics has the request
// series of every one of its own RPCs (the shared server wiring exports them from the start).
func TestEveryServiceExportsRequestMetricsFromTheStart(t *testing.T) {
	t.Parallel()
	m := startMesh(t)
	for name, desc := range map[string]grpc.ServiceDesc{
		"auth":      authv1.AuthService_ServiceDesc,
		"ingest":    ingestv1.IngestService_ServiceDesc,
		"analytics": analyticsv1.AnalyticsService_ServiceDesc,
		"campaigns": campaignsv1.CampaignService_ServiceDesc,
	} {
		resp, err := http.Get("http://" + m.admins[name] + "/metrics")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: /metrics %d %v", name, resp.StatusCode, err)
		}
		var methods []string
		for _, md := range desc.Methods {
			methods = append(methods, md.MethodName)
		}
		for _, sd := range desc.Streams {
			methods = append(methods, sd.StreamName)
		}
		lines := strings.Split(string(body), "\n")
		for _, metric := range []string{"grpc_server_started_total", "grpc_server_handled_total", "grpc_server_handling_seconds_count"} {
			for _, method := range methods {
				if !slices.ContainsFunc(lines, func(l string) bool {
					return strings.HasPrefix(l, metric+"{") && strings.Contains(l, `grpc_method="`+method+`"`) &&
						strings.Contains(l, `grpc_service="`+desc.ServiceName+`"`)
				}) {
					t.Errorf("%s: /metrics has no %s series for %s", name, metric, method)
				}
			}
		}
	}
}
