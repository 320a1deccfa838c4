// Command bench-ingest measures the event pipeline against its physical baselines, in one run
// on this machine, and prints them side by side as ratios:
//
//	(a) raw gRPC over mTLS: unary 100-event batches to a no-op handler
//	(b) raw JetStream: publishing 100-event batches with fsync on every write
//	(c) raw ClickHouse: native batch inserts of the writer's block size
//	(d) the pipeline: events durably acknowledged by ingest (direct, through the gateway's gRPC
//	    proxy, and REST through the gateway), latency of a 100-event call at 1 and 8 callers,
//	    events landed in ClickHouse over a steady run, and the writers' backlog drain rate —
//	    these two with one writer and again with two (writer 0 and 1 of 2, each on its own
//	    connections; -writers).
//
// With -privacy it measures instead (without ClickHouse) ingest's events durably acked with a
// tenant's privacy on (-suppressions suppressed subjects and PII rules: 2 properties hashed, 1
// dropped, IP truncated, user agent dropped) against the same load without, as a ratio, and the
// time from a suppression's put into the privacy bucket to its applying to the next request.
//
// NATS runs embedded (JetStream, file storage, fsync always); ClickHouse is the dev server
// (CM_CLICKHOUSE_ADDR, scripts/devenv.sh). Every phase is bounded in time and sends only to
// loopback. Results are also written as JSON.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

type result struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Note  string  `json:"note,omitempty"`
}

type bench struct {
	duration, steady time.Duration
	callers          int
	writers          []int // the writer counts of the steady runs, in order
	suppressions     int   // the privacy comparison's suppressed subjects
	results          []result
}

func (b *bench) add(name string, v float64, unit, note string) {
	b.results = append(b.results, result{name, v, unit, note})
	fmt.Printf("  %-72s %14.0f %s %s\n", name, v, unit, note)
}

func progress(format string, args ...any) { fmt.Printf("bench: "+format+"\n", args...) }

// load runs callers goroutines calling f until d has passed and returns the calls made and
// every call's latency.
func load(ctx context.Context, callers int, d time.Duration, f func(ctx context.Context, caller int, i int) error) (int64, []time.Duration, error) {
	// Cancel (rather than a deadline) ends the phase: a deadline would travel to servers as
	// grpc-timeout and could end a call there first, looking like a failure.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.AfterFunc(d, cancel)
	defer timer.Stop()
	var calls atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			var mine []time.Duration
			for i := 0; ctx.Err() == nil; i++ {
				start := time.Now()
				if err := f(ctx, c, i); err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
					}
					break
				}
				mine = append(mine, time.Since(start))
				calls.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	return calls.Load(), lat, firstErr
}

func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[min(len(lat)-1, int(float64(len(lat))*p))]
}

func serial(rates ...float64) float64 {
	var inv float64
	for _, r := range rates {
		if r <= 0 {
			return 0
		}
		inv += 1 / r
	}
	return 1 / inv
}

func main() {
	b := &bench{}
	flag.DurationVar(&b.duration, "duration", 10*time.Second, "length of each throughput phase")
	flag.DurationVar(&b.steady, "steady", 60*time.Second, "length of the steady end-to-end run")
	flag.IntVar(&b.callers, "callers", 8, "concurrent callers")
	writers := flag.String("writers", "1,2", "writer counts of the steady runs, one run each, in order (comma-separated, 1 to 8)")
	out := flag.String("out", ".state/bench-ingest.json", "where to write the results as JSON")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	privacyMode := flag.Bool("privacy", false, "measure only ingest with privacy on against off (suppressions and PII rules; no ClickHouse)")
	flag.IntVar(&b.suppressions, "suppressions", 100000, "suppressed subjects of the bench tenant in -privacy")
	flag.Parse()
	var err error
	if b.writers, err = parseWriterCounts(*writers); err != nil {
		fmt.Fprintln(os.Stderr, "bench-ingest:", err)
		os.Exit(2)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench-ingest:", err)
			os.Exit(1)
		}
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	ctx := context.Background()
	run := b.run
	if *privacyMode {
		run = b.privacyRun
	}
	if err := run(ctx); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench-ingest:", err)
		os.Exit(1)
	}
	data, _ := json.MarshalIndent(map[string]any{"time": time.Now().UTC(), "callers": b.callers, "results": b.results}, "", "  ")
	if err := os.WriteFile(*out, append(data, '\n'), 0o644); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench-ingest: write results:", err)
		os.Exit(1)
	}
	fmt.Printf("bench: results written to %s\n", *out)
}
