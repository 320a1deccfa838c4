package ingest

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

// BenchmarkIngestTails is the live event debugger's cost to ingest: Ingest of 100-event
// requests (5 properties each, a discarding Publisher: the domain alone) with no tails
// configured, with tails wired but nobody tailing (every request is recorded for the tails
// opened later; one tenant, and 1,000 tenants taking turns), and with one tail of the tenant
// open (its outcomes built and offered; at the default rate bound most are dropped and
// counted, or all read). Compare ns/op: the ratio of the second to the first is the cost when
// nobody tails (the target: within 3 %).
func BenchmarkIngestTails(b *testing.B) {
	requests := make([][]*ingestv1.Event, 256)
	for i := range requests {
		requests[i] = make([]*ingestv1.Event, 100)
		for j := range requests[i] {
			props, _ := structpb.NewStruct(map[string]any{"plan": "pro", "page": "/checkout", "price": 19.99, "currency": "EUR", "step": j})
			requests[i][j] = &ingestv1.Event{EventId: fmt.Sprintf("e-%d-%d", i, j), Type: ingestv1.EventType_EVENT_TYPE_TRACK, Name: "Checkout Step",
				UserId: fmt.Sprintf("user-%d", j), CampaignId: "cmp-1", Properties: props,
				Context: &ingestv1.EventContext{Ip: "203.0.113.7", UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Bench/1.0"}}
		}
	}
	rates := RateLimits{PerTenant: 1e12, PerSource: 1e12}
	run := func(b *testing.B, s *Service, tenants int) {
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			tenant := "t"
			if tenants > 1 {
				tenant = fmt.Sprintf("t%d", i%tenants)
			}
			if _, err := s.Ingest(context.Background(), tenant, "k", requests[i%len(requests)], 20_000); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("no-tails", func(b *testing.B) {
		run(b, NewService(discard{}, DefaultLimits, rates), 1)
	})
	b.Run("nobody-tailing", func(b *testing.B) {
		run(b, NewService(discard{}, DefaultLimits, rates).WithTails(NewTails(DefaultTailLimits)), 1)
	})
	b.Run("nobody-tailing-1000-tenants", func(b *testing.B) {
		run(b, NewService(discard{}, DefaultLimits, rates).WithTails(NewTails(DefaultTailLimits)), 1000)
	})
	oneTail := func(b *testing.B, limits TailLimits) {
		tails := NewTails(limits)
		tl, err := tails.Open("t")
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range tl.Outcomes() {
			}
		}()
		run(b, NewService(discard{}, DefaultLimits, rates).WithTails(tails), 1)
		b.StopTimer()
		tails.Close(tl)
		close(tl.c)
		<-done
	}
	b.Run("one-tail", func(b *testing.B) { oneTail(b, DefaultTailLimits) })
	b.Run("one-tail-every-outcome", func(b *testing.B) {
		limits := DefaultTailLimits
		limits.PerSecond = 1 << 20 // every outcome reaches the tail: the cost of building and reading them all
		oneTail(b, limits)
	})
}

// BenchmarkTailRecord is the work the debugger adds to a request when nobody tails (what
// nobody-tailing adds to no-tails above, measured alone, as the whole figure drowns in noise
// on a busy machine): recording a 100-event request's outcomes and asking whether anyone
// tails, for 1 and 1,000 tenants.
func BenchmarkTailRecord(b *testing.B) {
	res := Result{Accepted: make([]*ingestv1.AcceptedEvent, 100)}
	for i := range res.Accepted {
		res.Accepted[i] = &ingestv1.AcceptedEvent{Event: &ingestv1.Event{EventId: fmt.Sprintf("e-%d", i)}}
	}
	for _, tenants := range []int{1, 1000} {
		b.Run(fmt.Sprintf("tenants-%d", tenants), func(b *testing.B) {
			s := NewService(discard{}, DefaultLimits, DefaultRateLimits).WithTails(NewTails(DefaultTailLimits))
			names := make([]string, tenants)
			for i := range names {
				names[i] = fmt.Sprintf("t%d", i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.tell(names[i%tenants], "k", res, res.Accepted, 20_000)
			}
		})
	}
}
