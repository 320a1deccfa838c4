package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
)

// TestMetricsOfSentEvents sends events with an API key through REST, then reads them back
// through every analytics RPC over REST and gRPC via the gateway, and through the CLI. It
// logs how long each took to show the events (the bench measures freshness; no assertion on
// speed here beyond the waits' bounds).
func TestMetricsOfSentEvents(t *testing.T) {
	t.Parallel()
	m := startMesh(t)
	_, login, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "admin.json"))
	token, _ := login["accessToken"].(string)
	code, created, _ := m.rest(t, "POST", "/v1/apikeys", token, map[string]any{"name": "sdk", "scopes": []string{"events.write"}})
	key, _ := created["secret"].(string)
	if code != 200 || key == "" {
		t.Fatalf("create key: %d %v", code, created)
	}
	code, created, _ = m.rest(t, "POST", "/v1/apikeys", token, map[string]any{"name": "dashboard", "scopes": []string{"analytics.read"}})
	readKey, _ := created["secret"].(string)
	if code != 200 || readKey == "" {
		t.Fatalf("create read key: %d %v", code, created)
	}
	batch := map[string]any{"events": []map[string]any{
		{"eventId": "m1", "type": "EVENT_TYPE_IMPRESSION", "name": "view", "userId": "u1", "campaignId": "launch", "variant": "a",
			"value": map[string]any{"amountMicros": "2000", "currency": "EUR"}, "properties": map[string]any{"country": "DE"}},
		{"eventId": "m2", "type": "EVENT_TYPE_CLICK", "name": "tap", "userId": "u1", "campaignId": "launch", "variant": "a"},
		{"eventId": "m3", "type": "EVENT_TYPE_CONVERSION", "name": "purchase", "userId": "u1", "campaignId": "launch", "variant": "a",
			"value": map[string]any{"amountMicros": "12500000", "currency": "EUR"}},
		{"eventId": "m4", "type": "EVENT_TYPE_IMPRESSION", "name": "view", "anonymousId": "anon-9", "campaignId": "launch", "variant": "b"},
	}}
	if code, resp, _ := m.rest(t, "POST", "/v1/events:batch", key, batch); code != 200 || resp["accepted"] != float64(4) {
		t.Fatalf("send events: %d %v", code, resp)
	}
	sent := time.Now()
	visible := func(what string, ok func() bool) {
		t.Helper()
		waitFor(t, what, 20*time.Second, ok)
		t.Logf("%s: visible %s after the ack", what, time.Since(sent).Round(10*time.Millisecond))
	}

	// REST, with the read-only API key.
	visible("summary (REST)", func() bool {
		code, s, _ := m.rest(t, "GET", "/v1/analytics/summary?campaignIds=launch", readKey, nil)
		total, _ := s["total"].(map[string]any)
		return code == 200 && total["impressions"] == "2" && total["clicks"] == "1" && total["conversions"] == "1" && total["uniqueUsers"] == "2"
	})
	code, s, _ := m.rest(t, "GET", "/v1/analytics/breakdown?dimension=DIMENSION_PROPERTY&propertyKey=country&metric=METRIC_IMPRESSIONS", readKey, nil)
	if rows, _ := s["rows"].([]any); code != 200 || len(rows) != 2 || rows[0].(map[string]any)["value"] != "" || rows[1].(map[string]any)["value"] != "DE" {
		t.Errorf("breakdown by country (REST): %d %v", code, s)
	}
	code, s, _ = m.rest(t, "POST", "/v1/analytics/funnel", readKey, map[string]any{"steps": []map[string]any{{"eventName": "view"}, {"eventName": "tap"}, {"eventName": "purchase"}}})
	if steps, _ := s["steps"].([]any); code != 200 || len(steps) != 3 || steps[2].(map[string]any)["users"] != "1" || steps[0].(map[string]any)["users"] != "2" {
		t.Errorf("funnel (REST): %d %v", code, s)
	}
	// A viewer's credential lacks analytics.read.
	if code, _, _ := m.rest(t, "GET", "/v1/analytics/summary?campaignIds=launch", key, nil); code != http.StatusForbidden {
		t.Errorf("summary with an events.write key: %d, want 403", code)
	}
	// Live over REST: newline-delimited JSON, one object a push.
	req, _ := http.NewRequest("GET", m.url("/v1/analytics/live?campaignId=launch&intervalSeconds=1"), nil)
	req.Header.Set("Authorization", "Bearer "+readKey)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := m.httpc.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(resp.Body)
	for i := 0; i < 2; i++ {
		if !lines.Scan() {
			t.Fatalf("live stream (REST) ended after %d pushes: %v", i, lines.Err())
		}
		var push struct {
			Result struct {
				Metrics struct{ Impressions string }
			}
		}
		if err := json.Unmarshal(lines.Bytes(), &push); err != nil || push.Result.Metrics.Impressions != "2" {
			t.Fatalf("live push (REST) %d: %s (%v)", i, lines.Bytes(), err)
		}
	}
	resp.Body.Close()

	// gRPC through the gateway.
	client := analyticsv1.NewAnalyticsServiceClient(m.grpcConn(t))
	gctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+readKey)
	series, err := client.GetMetricSeries(gctx, &analyticsv1.GetMetricSeriesRequest{CampaignId: "launch", Granularity: analyticsv1.Granularity_GRANULARITY_MINUTE,
		TimeZone: "Europe/Berlin", StartTime: timestamppb.New(time.Now().Add(-time.Hour))})
	var n int64
	for _, b := range series.GetBuckets() {
		n += b.GetMetrics().GetEvents()
	}
	if err != nil || n != 4 || len(series.GetBuckets()) < 60 {
		t.Errorf("series (gRPC): %d events in %d buckets, %v", n, len(series.GetBuckets()), err)
	}
	live, err := client.WatchCampaignMetrics(gctx, &analyticsv1.WatchCampaignMetricsRequest{CampaignId: "launch", IntervalSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	if push, err := live.Recv(); err != nil || push.GetMetrics().GetConversions() != 1 || push.GetMetrics().GetConversionValue()[0].GetAmountMicros() != 12500000 {
		t.Errorf("live (gRPC): %v %v", push, err)
	}

	// The CLI.
	cli := bin(t, "cmesh")
	cmd := exec.Command(cli, "-addr", m.gateway, "-cacert", filepath.Join(m.certs, "ca.pem"), "metrics", "summary", "-campaign", "launch", "-by-variant")
	cmd.Env = append(cmd.Environ(), "CMESH_TOKEN="+readKey, "CMESH_CREDENTIALS="+filepath.Join(m.dir, "credentials.json"))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "12.50 EUR") || !strings.Contains(string(out), "TOTAL") {
		t.Errorf("cmesh metrics summary: %v\n%s", err, out)
	}
	t.Logf("cmesh metrics summary:\n%s", out)
}
