// Command bench-dsr measures data-subject requests on the data set of bench-analytics (10M
// events by default, internal/benchdata), with the services as real processes over mTLS:
//
//   - auth (a PostgreSQL database of its own, kept with the data set: the big tenant is its
//     bootstrap tenant, so that the tokens it issues reach the data), analytics (query API and
//     writer on the bench's ClickHouse database) and dsr (a fresh PostgreSQL database, both
//     as participants), NATS embedded with the project's deploy/nats.conf;
//   - one erasure: create → STATE_COMPLETED, median of -single-runs on different subjects;
//   - -erasures erasures submitted at once, each its own subject: time until all complete, the
//     ClickHouse mutations that ran (analytics' cm_analytics_erasure_mutations_total and
//     system.mutations), then every erased subject has 0 rows and every other row is there;
//   - an ACCESS export of a subject with -export-events events: create → completed, the
//     download through DownloadExport, dsr's peak memory (VmHWM);
//   - ingest with privacy on: bench-ingest's privacy mode (see ingestPrivacy).
//
// The data set is loaded into <-database>_base once (reused with -keep, like bench-analytics),
// and each run works on a copy of it in -database (ALTER TABLE … ATTACH PARTITION … FROM: hard
// links, no copy of the data), since erasures delete from it. ClickHouse and PostgreSQL are the
// dev servers (.state/env); everything listens on loopback ports of its own. Results are
// printed and written as JSON.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/benchdata"
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
	data         benchdata.Config
	keep         bool
	database     string // the working database; the data set is kept in database + "_base"
	stateDir     string // auth's key-encryption key and bootstrap credentials, kept with the data set
	bin          string // prebuilt binaries (empty: go build them into a temp dir)
	singleRuns   int
	erasures     int
	exportEvents int64
	timeout      time.Duration // of each phase
	ingest       bool          // run bench-ingest's privacy mode
	suppressions int
	dryRun       bool
}

func (b *bench) add(name string, v float64, unit, note string) {
	b.results = append(b.results, result{name, v, unit, note})
	format := "  %-62s %14.0f %s %s\n"
	switch unit {
	case "ms", "s", "x", "MiB":
		format = "  %-62s %14.2f %s %s\n"
	}
	fmt.Printf(format, name, v, unit, note)
}

// todo records a figure the run could not take, clearly marked, with why.
func (b *bench) todo(name, why string) {
	b.results = append(b.results, result{Name: name, Unit: "TODO", Note: why})
	fmt.Printf("  %-62s %14s %s\n", name, "TODO", why)
}

// machine describes the cores and the load average: other work on the machine shows in the
// figures.
func machine() string {
	load := "?"
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(data)); len(f) >= 3 {
			load = strings.Join(f[:3], " ")
		}
	}
	return fmt.Sprintf("%d cores, load average %s", runtime.NumCPU(), load)
}

func progress(format string, args ...any) { benchdata.Progress(format, args...) }

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func main() {
	b := &bench{}
	flag.Int64Var(&b.cfg.data.Events, "events", 10_000_000, "events of the big tenant (the data set of bench-analytics)")
	flag.IntVar(&b.cfg.data.SmallTenants, "small-tenants", 5, "small tenants (10,000 events and 5 campaigns each)")
	flag.IntVar(&b.cfg.data.Campaigns, "campaigns", 50, "campaigns of the big tenant")
	flag.IntVar(&b.cfg.data.Days, "days", 7, "days the events span, ending at the load time's hour")
	flag.Uint64Var(&b.cfg.data.Seed, "seed", 1, "seed of the data set (the same seed gives the same data)")
	flag.BoolVar(&b.cfg.keep, "keep", false, "reuse the data set in <-database>_base (and auth's database and -state-dir) when it holds exactly this one")
	flag.StringVar(&b.cfg.database, "database", "bench_dsr", "ClickHouse database the services run on, a fresh copy of <database>_base every run; also names the PostgreSQL databases <database>_auth (kept) and <database>_dsr (fresh)")
	flag.StringVar(&b.cfg.stateDir, "state-dir", ".state/bench-dsr", "where auth's key-encryption key and bootstrap credentials are kept with the data set")
	flag.StringVar(&b.cfg.bin, "bin", "", "directory with prebuilt auth, analytics and dsr binaries (empty: go build them from this checkout)")
	flag.IntVar(&b.cfg.singleRuns, "single-runs", 3, "single erasures timed one after the other, each on its own subject (the median is reported)")
	flag.IntVar(&b.cfg.erasures, "erasures", 1000, "erasures submitted at once, each its own subject")
	flag.Int64Var(&b.cfg.exportEvents, "export-events", 100_000, "events of the subject of the ACCESS export")
	flag.DurationVar(&b.cfg.timeout, "phase-timeout", 30*time.Minute, "longest any phase may take before the run fails")
	flag.BoolVar(&b.cfg.ingest, "ingest", true, "also run bench-ingest's privacy mode (ingest with a suppression list and PII rules on ÷ off) and take its figures")
	flag.IntVar(&b.cfg.suppressions, "suppressions", 100_000, "suppressed subjects of bench-ingest's privacy mode")
	flag.BoolVar(&b.cfg.dryRun, "dry-run", false, "prepare the data, start the mesh, log in and pick the subjects, then stop before the requests")
	out := flag.String("out", ".state/bench-dsr.json", "where to write the results as JSON")
	flag.Parse()
	if b.cfg.data.Events < 1000 || b.cfg.data.Campaigns < 10 || b.cfg.data.Days < 1 || b.cfg.data.SmallTenants < 0 ||
		b.cfg.singleRuns < 1 || b.cfg.erasures < 1 || b.cfg.exportEvents < 1 || b.cfg.exportEvents > b.cfg.data.Events {
		fmt.Fprintln(os.Stderr, "bench-dsr: need -events ≥ 1000, -campaigns ≥ 10, -days ≥ 1, -small-tenants ≥ 0, -single-runs ≥ 1, -erasures ≥ 1, 1 ≤ -export-events ≤ -events")
		os.Exit(2)
	}
	// Ctrl-C stops the services the bench started before it exits.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	start := time.Now()
	err := b.run(ctx)
	stop()
	// The figures taken so far are written also when a phase fails: a phase that does not
	// finish is a finding too.
	doc := map[string]any{"time": time.Now().UTC(), "events": b.cfg.data.Events, "small_tenants": b.cfg.data.SmallTenants,
		"campaigns": b.cfg.data.Campaigns, "days": b.cfg.data.Days, "seed": b.cfg.data.Seed, "erasures": b.cfg.erasures,
		"export_events": b.cfg.exportEvents, "dry_run": b.cfg.dryRun, "machine": machine(), "results": b.results}
	if err != nil {
		doc["error"] = err.Error()
	}
	data, _ := json.MarshalIndent(doc, "", "  ")
	if werr := os.WriteFile(*out, append(data, '\n'), 0o644); werr != nil {
		fmt.Fprintln(os.Stderr, "bench-dsr: write results:", werr)
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench-dsr: %v\n(the figures taken before are in %s)\n", err, *out)
		os.Exit(1)
	}
	fmt.Printf("bench: results written to %s (whole run %s)\n", *out, time.Since(start).Round(time.Second))
}
