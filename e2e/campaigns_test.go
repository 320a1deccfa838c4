package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
)

// TestCampaignLifecycle runs a campaign through its life on the real mesh, mixing REST, gRPC and
// the CLI: created, scheduled, started by the scheduler, paused, resumed, exhausted by spend
// events sent through ingest (counted by analytics), resumed by a larger budget, completed.
func TestCampaignLifecycle(t *testing.T) {
	t.Parallel()
	m := startMesh(t)
	_, login, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "admin.json"))
	token, _ := login["accessToken"].(string)
	_, created, _ := m.rest(t, "POST", "/v1/apikeys", token, map[string]any{"name": "sdk", "scopes": []string{"events.write"}})
	key, _ := created["secret"].(string)

	// Created over REST, starting two seconds from now (wall clock in UTC).
	start := time.Now().UTC().Add(2 * time.Second).Format("2006-01-02T15:04:05")
	code, c, _ := m.rest(t, "POST", "/v1/campaigns", token, map[string]any{
		"name": "Launch", "channel": "CHANNEL_WEB", "goal": map[string]any{"conversionEvent": "purchase"},
		"schedule": map[string]any{"start": start, "timeZone": "UTC"},
		"budget":   map[string]any{"totalMicros": "5000", "currencyCode": "EUR", "pacing": "PACING_ASAP"},
		"variants": []map[string]any{{"name": "a", "weight": 50}, {"name": "b", "weight": 50}},
	})
	id, _ := c["id"].(string)
	if code != 200 || id == "" || c["state"] != "STATE_DRAFT" {
		t.Fatalf("create: %d %v", code, c)
	}
	state := func() string {
		_, c, _ := m.rest(t, "GET", "/v1/campaigns/"+id, token, nil)
		s, _ := c["state"].(string)
		return s
	}
	waitState := func(want string) {
		t.Helper()
		waitFor(t, "campaign "+want, 30*time.Second, func() bool { return state() == want })
	}

	// Scheduled over gRPC; the scheduler starts it.
	client := campaignsv1.NewCampaignServiceClient(m.grpcConn(t))
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
	if got, err := client.ScheduleCampaign(ctx, &campaignsv1.ScheduleCampaignRequest{Id: id}); err != nil || got.GetState() != campaignsv1.Campaign_STATE_SCHEDULED {
		t.Fatalf("schedule: %v %v", got, err)
	}
	waitState("STATE_ACTIVE")

	// Paused with the CLI, resumed over REST.
	cli := bin(t, "cmesh")
	cmesh := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(cli, append([]string{"-addr", m.gateway, "-cacert", filepath.Join(m.certs, "ca.pem")}, args...)...)
		cmd.Env = append(cmd.Environ(), "CMESH_TOKEN="+token, "CMESH_CREDENTIALS="+filepath.Join(m.dir, "credentials.json"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cmesh %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	cmesh("campaigns", "pause", id)
	if s := state(); s != "STATE_PAUSED" {
		t.Fatalf("after cmesh campaigns pause: %s", s)
	}
	if code, c, _ := m.rest(t, "POST", "/v1/campaigns/"+id+":resume", token, map[string]any{}); code != 200 || c["state"] != "STATE_ACTIVE" {
		t.Fatalf("resume: %d %v", code, c)
	}

	// Spend: two clicks costing 3,000 micros each pass the 5,000 budget.
	batch := map[string]any{"events": []map[string]any{
		{"eventId": "s1", "type": "EVENT_TYPE_CLICK", "userId": "u1", "campaignId": id, "value": map[string]any{"amountMicros": "3000", "currency": "EUR"}},
		{"eventId": "s2", "type": "EVENT_TYPE_CLICK", "userId": "u2", "campaignId": id, "value": map[string]any{"amountMicros": "3000", "currency": "EUR"}},
	}}
	if code, resp, _ := m.rest(t, "POST", "/v1/events:batch", key, batch); code != 200 || resp["accepted"] != float64(2) {
		t.Fatalf("send spend events: %d %v", code, resp)
	}
	waitState("STATE_BUDGET_EXHAUSTED")
	t.Logf("pacing: %s", cmesh("campaigns", "pacing", id))

	// A larger budget (PATCH with the current etag) lets the scheduler resume it; then completed.
	_, c, _ = m.rest(t, "GET", "/v1/campaigns/"+id, token, nil)
	code, c, _ = m.rest(t, "PATCH", "/v1/campaigns/"+id, token, map[string]any{"etag": c["etag"],
		"budget": map[string]any{"totalMicros": "100000", "currencyCode": "EUR", "pacing": "PACING_ASAP"}})
	if code != 200 {
		t.Fatalf("raise the budget: %d %v", code, c)
	}
	waitState("STATE_ACTIVE")
	if got, err := client.CompleteCampaign(ctx, &campaignsv1.CompleteCampaignRequest{Id: id}); err != nil || got.GetState() != campaignsv1.Campaign_STATE_COMPLETED {
		t.Fatalf("complete: %v %v", got, err)
	}
	out := cmesh("campaigns", "transitions", id)
	for _, want := range []string{"scheduled", "active", "paused", "budget_exhausted", "completed"} {
		if !strings.Contains(strings.ToLower(out), want) {
			t.Errorf("transitions lack %q:\n%s", want, out)
		}
	}
	t.Logf("transitions:\n%s", out)
}
