package natsjs_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	ingestjs "github.com/campaignmesh/campaignmesh/services/ingest/natsjs"
)

// BenchmarkPublish stores 100-event requests of 100 users from 1 and from 8 concurrent
// callers, as cmd/bench-ingest's callers send them, on a JetStream server that fsyncs every
// message: through the coalescing publisher (events split over the 8 partitions), and as one
// message a request on the subject of the form before partitions, for comparison in the same
// run. With 1 caller, ns/op is a request's latency.
//
//	go test -run '^$' -bench Publish -benchtime 5s ./services/ingest/natsjs
func BenchmarkPublish(b *testing.B) {
	for _, bc := range []struct {
		mode    string
		callers int
	}{{"one-message-a-request", 1}, {"coalescing", 1}, {"one-message-a-request", 8}, {"coalescing", 8}} {
		mode, callers := bc.mode, bc.callers
		b.Run(fmt.Sprintf("%s/callers=%d", mode, callers), func(b *testing.B) {
			js := streamOf(b, natstest.Start(b), natsjs.DefaultStream)
			p := ingestjs.NewPublisher(js, nil)
			publish := func(ctx context.Context, caller, call int) error {
				req := request("bench", caller, call)
				id := fmt.Sprintf("b-%d-%d", caller, call)
				if mode == "coalescing" {
					return p.Publish(ctx, "bench", id, req)
				}
				data, err := natsjs.EncodeBatch(req)
				if err != nil {
					return err
				}
				_, err = natsjs.Publish(ctx, js, "bench", id, data, nil)
				return err
			}
			var next atomic.Int64
			b.ResetTimer()
			var wg sync.WaitGroup
			for c := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						if err := publish(context.Background(), c, int(i)); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(natstest.StreamMsgs(b, js, natsjs.StreamName))/float64(b.N), "msgs/request")
		})
	}
}
