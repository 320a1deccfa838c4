package ingest

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
)

// discard is a Publisher that stores nothing: the benchmark measures the domain alone.
type discard struct{}

func (discard) Publish(context.Context, string, string, []*ingestv1.AcceptedEvent) error { return nil }

// BenchmarkIngestPrivacy: a 100-event request with PII properties, IP and user agent, without
// privacy state and with 100,000 suppressions and the PII rules of bench-ingest -privacy.
func BenchmarkIngestPrivacy(b *testing.B) {
	h, _ := privacy.NewHasher(make([]byte, privacy.MinKeyBytes))
	view := privacy.NewView(nil)
	for i := range 100000 {
		view.Apply(privacy.SuppressionKey("on", h.SubjectHash("on", fmt.Sprintf("erased-%d", i))), nil, false)
	}
	view.Apply(privacy.PolicyKey("on"), []byte(`{"version":1,"property_rules":{"email":"hash","phone":"hash","address":"drop"},"ip":"truncate","user_agent":"drop"}`), false)
	s := NewService(discard{}, DefaultLimits, RateLimits{PerTenant: 1e12, PerSource: 1e12}).WithPrivacy(Privacy{State: view, Hasher: h})
	request := func(n int) []*ingestv1.Event {
		out := make([]*ingestv1.Event, 100)
		for j := range out {
			props, _ := structpb.NewStruct(map[string]any{"email": fmt.Sprintf("user-%d@example.com", j), "phone": fmt.Sprintf("+1555%07d", j),
				"address": fmt.Sprintf("%d Main Street", j), "plan": "pro", "page": "/checkout"})
			out[j] = &ingestv1.Event{EventId: fmt.Sprintf("e-%d-%d", n, j), Type: ingestv1.EventType_EVENT_TYPE_IMPRESSION, UserId: fmt.Sprintf("user-%d", j),
				Properties: props, Context: &ingestv1.EventContext{Ip: fmt.Sprintf("203.0.113.%d", j), UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Bench/1.0"}}
		}
		return out
	}
	for _, tenant := range []string{"off", "on"} {
		b.Run(tenant, func(b *testing.B) {
			reqs := make([][]*ingestv1.Event, b.N)
			for i := range reqs {
				reqs[i] = request(i)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Ingest(context.Background(), tenant, "k", reqs[i], 1000); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
