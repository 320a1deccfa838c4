package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/quota"
)

// Over a hard events quota, REST answers 429 with Retry-After until the reset and the JSON error
// naming the quota (ErrorInfo metadata, RetryInfo), and the Segment endpoints answer 429 with
// Retry-After and the quota's message, so SDKs retry after the reset rather than drop events.
func TestOverAHardQuotaIs429(t *testing.T) {
	e := newSegmentEnv(t, nil)
	nc, js, err := natsjs.Connect(e.ns.ClientURL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	kv, err := quota.OpenBucket(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	resets := quota.PeriodEnd(quota.Day, now)
	full := quota.Snapshot{AsOf: now, Quotas: []quota.Quota{{Meter: quota.EventsAccepted, Limit: 100, Hard: true, Period: quota.Day, Used: 100, ResetsAt: resets}}}
	if err := quota.Publish(context.Background(), kv, "tenant-a", full); err != nil {
		t.Fatal(err)
	}
	rest := map[string]string{"Authorization": "Bearer " + keyA, "Content-Type": "application/json"}
	var code int
	var h http.Header
	var body string
	meshtest.Eventually(t, 10*time.Second, func() bool {
		code, h, body = e.post(t, "/v1/events:batch", strings.NewReader(`{"events":[{"event_id":"over-1","type":"EVENT_TYPE_CLICK","user_id":"u"}]}`), rest)
		return code == http.StatusTooManyRequests
	}, "REST over the quota: not 429")
	retry, _ := strconv.Atoi(h.Get("Retry-After"))
	if until := time.Until(resets); retry < 1 || time.Duration(retry)*time.Second > until+2*time.Second {
		t.Fatalf("Retry-After %q, want the %s until the reset", h.Get("Retry-After"), until)
	}
	var answer struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Details []struct {
			Type       string            `json:"@type"`
			Reason     string            `json:"reason"`
			Metadata   map[string]string `json:"metadata"`
			RetryDelay string            `json:"retryDelay"`
		} `json:"details"`
	}
	if err := json.Unmarshal([]byte(body), &answer); err != nil {
		t.Fatalf("answer %s: %v", body, err)
	}
	wantMessage := "quota events_accepted exceeded: 100 per day, resets at " + resets.UTC().Format(time.RFC3339)
	if answer.Code != 8 || answer.Message != wantMessage {
		t.Fatalf("answer %s", body)
	}
	var info, delay bool
	for _, d := range answer.Details {
		switch d.Type {
		case "type.googleapis.com/google.rpc.ErrorInfo":
			m := d.Metadata
			info = d.Reason == "QUOTA_EXCEEDED" && m["quota"] == "events_accepted" && m["limit"] == "100" && m["period"] == "day" &&
				m["resets_at"] == resets.UTC().Format(time.RFC3339)
		case "type.googleapis.com/google.rpc.RetryInfo":
			delay = d.RetryDelay != ""
		}
	}
	if !info || !delay {
		t.Fatalf("answer lacks the quota's ErrorInfo or RetryInfo: %s", body)
	}

	code, h, body = e.post(t, "/v1/batch", strings.NewReader(`{"batch":[{"type":"track","event":"A","messageId":"over","userId":"u"}]}`), basic(keyA))
	if retry, _ := strconv.Atoi(h.Get("Retry-After")); code != http.StatusTooManyRequests || retry < 1 || !strings.Contains(body, wantMessage) {
		t.Fatalf("Segment over the quota: %d %s Retry-After %q", code, body, h.Get("Retry-After"))
	}
	// Another tenant is not limited.
	if code, _, body := e.post(t, "/v1/batch", strings.NewReader(`{"batch":[{"type":"track","event":"A","messageId":"b1","userId":"u"}]}`), basic(keyB)); code != http.StatusOK {
		t.Fatalf("tenant-b: %d %s", code, body)
	}
}
