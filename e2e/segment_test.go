package e2e

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/analytics-go/v3"
)

// statusRecorder records the HTTP statuses the SDK's requests got.
type statusRecorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen map[int]int
}

func (r *statusRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err == nil {
		r.mu.Lock()
		r.seen[resp.StatusCode]++
		r.mu.Unlock()
	}
	return resp, err
}

func (r *statusRecorder) count(code int) int { r.mu.Lock(); defer r.mu.Unlock(); return r.seen[code] }

// TestSegmentGoSDKEndToEnd points the real Segment Go SDK at the gateway with a write key
// (an API key scoped to events.write): track, identify, page, a batch of 1,000 and an event
// retried after the gateway answered 503 (ingest stopped) all land in ClickHouse exactly once,
// with the mapped fields.
func TestSegmentGoSDKEndToEnd(t *testing.T) {
	t.Parallel()
	s := startDSRSession(t, meshConfig{})
	rec := &statusRecorder{next: &http.Transport{TLSClientConfig: s.edgeTLS(t)}, seen: map[int]int{}}
	client, err := analytics.NewWithConfig(s.key, analytics.Config{
		Endpoint: "https://" + s.gateway, Transport: rec, Interval: 100 * time.Millisecond, BatchSize: 250,
		RetryAfter: func(int) time.Duration { return 500 * time.Millisecond },
	})
	if err != nil {
		t.Fatal(err)
	}
	enqueue := func(m analytics.Message) {
		if err := client.Enqueue(m); err != nil {
			t.Fatal(err)
		}
	}
	enqueue(analytics.Track{MessageId: "sdk-track", UserId: "sdk-u1", Event: "Signed Up",
		Properties: analytics.NewProperties().Set("campaign_id", "c-sdk").Set("variant", "b").Set("plan", "pro")})
	enqueue(analytics.Identify{MessageId: "sdk-identify", UserId: "sdk-u1", Traits: analytics.NewTraits().SetName("Sam")})
	enqueue(analytics.Page{MessageId: "sdk-page", UserId: "sdk-u1", Name: "Home"})
	for i := range 1000 {
		enqueue(analytics.Track{MessageId: fmt.Sprintf("sdk-batch-%d", i), AnonymousId: "sdk-anon", Event: "tick"})
	}
	waitFor(t, "the first 1,003 events stored", 60*time.Second, func() bool {
		return s.count(`SELECT count() FROM events WHERE tenant_id = ? AND event_id LIKE 'sdk-%'`, s.tenant) == 1003
	})

	// ingest stops: the gateway answers 503 and the SDK retries until ingest is back.
	s.procs["ingest"].stop()
	enqueue(analytics.Track{MessageId: "sdk-retried", UserId: "sdk-u2", Event: "Retried"})
	waitFor(t, "a 503 answered to the SDK", 20*time.Second, func() bool { return rec.count(http.StatusServiceUnavailable) > 0 })
	s.procs["ingest"].start()
	waitFor(t, "ingest back", 30*time.Second, func() bool { return httpOK("http://" + s.admins["ingest"] + "/healthz") })
	// The SDK's own retry (not a Close, which drops what is still waiting) delivers it.
	waitFor(t, "the retried event stored", 30*time.Second, func() bool {
		return s.count(`SELECT count() FROM events WHERE tenant_id = ? AND event_id = 'sdk-retried'`, s.tenant) == 1
	})
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	if n, distinct := s.count(`SELECT count() FROM events WHERE tenant_id = ? AND event_id LIKE 'sdk-%'`, s.tenant),
		s.count(`SELECT uniqExact(event_id) FROM events WHERE tenant_id = ? AND event_id LIKE 'sdk-%'`, s.tenant); n != 1004 || distinct != 1004 {
		t.Errorf("%d events stored (%d distinct), want 1004 once each", n, distinct)
	}
	if n := s.count(`SELECT count() FROM events WHERE tenant_id = ? AND event_id = 'sdk-track' AND user_id = 'sdk-u1'
		AND campaign_id = 'c-sdk' AND variant = 'b' AND name = 'Signed Up' AND prop_values[indexOf(prop_keys, 'plan')] = 'pro'`, s.tenant); n != 1 {
		t.Errorf("the track event's fields were not mapped")
	}
	// A write key sends events and reads nothing.
	for _, path := range []string{"/v1/analytics/summary?campaignIds=c-sdk", "/v1/campaigns", "/v1/users", "/v1/dsr/requests", "/v1/audit/records"} {
		if code, _, _ := s.rest(t, "GET", path, s.key, nil); code != http.StatusForbidden {
			t.Errorf("GET %s with the write key: %d, want 403", path, code)
		}
	}
	if n := s.count(`SELECT count() FROM events WHERE tenant_id = ? AND event_id = 'sdk-identify' AND prop_values[indexOf(prop_keys, 'traits.name')] = 'Sam'`, s.tenant); n != 1 {
		t.Errorf("the identify event's traits were not kept")
	}
}
