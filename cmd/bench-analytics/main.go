// Command bench-analytics measures the analytics query API against its physical baseline, in
// one run on this machine:
//
//   - it loads a reproducible synthetic data set into the real schema (events and the
//     events_hourly rollup its materialized view keeps): by default 10M events of one tenant
//     over 7 days in 50 campaigns, plus small tenants, generated inside ClickHouse by INSERT …
//     SELECT from numbers() with hash functions seeded from a PCG generator;
//   - it runs each query type through the analytics RPC over mTLS (the platform's interceptor
//     chain, a JWT with analytics.read), the same queries directly through the store and
//     clickhouse-go, and the best SQL for the question (reference.go: the engine's limit), and
//     prints p50/p99 of the three, their ratios and issue 12's targets;
//   - it compares the approximate unique users with exact ones (users.go);
//   - it measures freshness: a small batch through the real ingest RPC, JetStream (embedded,
//     fsync always) and the analytics writer with its default batching, from the ingest ack
//     until GetCampaignSummary shows the events.
//
// ClickHouse is the dev server (CM_CLICKHOUSE_ADDR, scripts/devenv.sh). Every phase is bounded
// and sends only to loopback. Results are also written as JSON.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"time"
)

type result struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Note  string  `json:"note,omitempty"`
}

type bench struct {
	cfg     config
	results []result
}

type config struct {
	events       int64
	smallTenants int
	campaigns    int
	days         int
	seed         uint64
	iterations   int
	budget       time.Duration
	samples      int
	keep         bool
	database     string
}

func (b *bench) add(name string, v float64, unit, note string) {
	b.results = append(b.results, result{name, v, unit, note})
	format := "  %-62s %14.0f %s %s\n"
	switch unit {
	case "ms", "s", "x":
		format = "  %-62s %14.2f %s %s\n"
	case "%":
		format = "  %-62s %14.3f %s %s\n"
	}
	fmt.Printf(format, name, v, unit, note)
}

// machine describes the cores and the load average: other work on the machine (ClickHouse
// is shared) shows in the figures.
func machine() string {
	load := "?"
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(data)); len(f) >= 3 {
			load = strings.Join(f[:3], " ")
		}
	}
	return fmt.Sprintf("%d cores, load average %s", runtime.NumCPU(), load)
}

func progress(format string, args ...any) { fmt.Printf("bench: "+format+"\n", args...) }

func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[min(len(lat)-1, int(float64(len(lat))*p))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func main() {
	b := &bench{}
	flag.Int64Var(&b.cfg.events, "events", 10_000_000, "events of the big tenant")
	flag.IntVar(&b.cfg.smallTenants, "small-tenants", 5, "small tenants (10,000 events and 5 campaigns each)")
	flag.IntVar(&b.cfg.campaigns, "campaigns", 50, "campaigns of the big tenant")
	flag.IntVar(&b.cfg.days, "days", 7, "days the events span, ending at the load time's hour")
	flag.Uint64Var(&b.cfg.seed, "seed", 1, "seed of the data set (the same seed gives the same data)")
	flag.IntVar(&b.cfg.iterations, "iterations", 50, "timed runs of each query, each way: through the RPC, its SQL directly, the reference SQL")
	flag.DurationVar(&b.cfg.budget, "query-budget", 20*time.Second, "stop timing a query after this long (at least 5 runs each way), so slow queries keep the run short")
	flag.IntVar(&b.cfg.samples, "freshness-samples", 50, "freshness samples (ingest ack → visible in the summary)")
	flag.BoolVar(&b.cfg.keep, "keep", false, "reuse the data set in -database when it holds exactly this one (same flags, same row count)")
	flag.StringVar(&b.cfg.database, "database", "bench_analytics", "ClickHouse database of the data set (dropped and reloaded unless -keep finds it complete)")
	out := flag.String("out", ".state/bench-analytics.json", "where to write the results as JSON")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	flag.Parse()
	if b.cfg.events < 1000 || b.cfg.campaigns < 10 || b.cfg.days < 1 || b.cfg.iterations < 1 || b.cfg.samples < 1 || b.cfg.smallTenants < 0 {
		fmt.Fprintln(os.Stderr, "bench-analytics: need -events ≥ 1000, -campaigns ≥ 10, -days ≥ 1, -iterations ≥ 1, -freshness-samples ≥ 1, -small-tenants ≥ 0")
		os.Exit(2)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench-analytics:", err)
			os.Exit(1)
		}
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	ctx := context.Background()
	start := time.Now()
	if err := b.run(ctx); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench-analytics:", err)
		os.Exit(1)
	}
	data, _ := json.MarshalIndent(map[string]any{"time": time.Now().UTC(), "events": b.cfg.events, "small_tenants": b.cfg.smallTenants,
		"campaigns": b.cfg.campaigns, "days": b.cfg.days, "seed": b.cfg.seed, "iterations": b.cfg.iterations, "machine": machine(), "results": b.results}, "", "  ")
	if err := os.WriteFile(*out, append(data, '\n'), 0o644); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench-analytics: write results:", err)
		os.Exit(1)
	}
	fmt.Printf("bench: results written to %s (whole run %s)\n", *out, time.Since(start).Round(time.Second))
}
