// Command analytics runs the analytics service. Today it runs the writer that moves accepted
// events from JetStream into ClickHouse; the query API joins it later.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/process"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

type settings struct {
	adminListen, natsURL, clickhouseAddr, database string
	writer                                         writer.Config
	faultExitAfterInserts                          int
	logLevel                                       slog.Level
}

// LogLevel implements process.Settings.
func (s settings) LogLevel() slog.Level { return s.logLevel }

func parse(args []string) (settings, error) {
	s := settings{writer: writer.DefaultConfig}
	fs := flag.NewFlagSet("analytics", flag.ContinueOnError)
	fs.StringVar(&s.adminListen, "admin-listen", "127.0.0.1:9104", "admin listen address for /metrics and /healthz")
	fs.StringVar(&s.natsURL, "nats-url", "nats://127.0.0.1:14222", "NATS server with JetStream")
	fs.StringVar(&s.clickhouseAddr, "clickhouse-addr", "127.0.0.1:19000", "ClickHouse native protocol address")
	fs.StringVar(&s.database, "clickhouse-database", "analytics", "ClickHouse database")
	fs.IntVar(&s.writer.BatchRows, "writer-batch-rows", s.writer.BatchRows, "rows per ClickHouse insert (at most)")
	fs.DurationVar(&s.writer.MaxWait, "writer-max-wait", s.writer.MaxWait, "longest a row waits before it is inserted")
	fs.IntVar(&s.faultExitAfterInserts, "fault-exit-after-inserts", 0, "fault injection for tests: exit right after this many inserts, before acknowledging (0: off)")
	fs.TextVar(&s.logLevel, "log-level", slog.LevelInfo, "log level (debug, info, warn, error)")
	if err := config.Parse(fs, "CM_ANALYTICS", args); err != nil {
		return s, err
	}
	var p config.Problems
	p.Check(s.writer.BatchRows >= 1 && s.writer.BatchRows <= 1000000, "-writer-batch-rows must be 1 to 1000000")
	p.Check(s.writer.MaxWait >= 10*time.Millisecond && s.writer.MaxWait <= time.Minute, "-writer-max-wait must be 10ms to 1m")
	return s, p.Err()
}

func main() { process.Main("analytics", parse, run) }

func run(ctx context.Context, s settings, logger *slog.Logger) error {
	nc, js, err := natsjs.Connect(s.natsURL, "analytics-writer")
	if err != nil {
		return err
	}
	defer nc.Close()
	conn, err := clickhouse.Open(ctx, s.clickhouseAddr, s.database)
	if err != nil {
		return err
	}
	defer conn.Close()
	reg := telemetry.NewRegistry()
	w := writer.New(js, conn, s.writer, logger, reg)
	if s.faultExitAfterInserts > 0 {
		w.CrashAfterInserts(s.faultExitAfterInserts, func() {
			logger.Warn("fault injection: exiting between insert and ack")
			os.Exit(3)
		})
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(ctx) })
	g.Go(func() error { return telemetry.ServeAdmin(ctx, s.adminListen, reg, logger) })
	return g.Wait()
}
