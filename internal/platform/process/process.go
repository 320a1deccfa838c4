// Package process is the lifecycle every CampaignMesh binary shares: settings from flags and
// environment, a JSON logger, tracing, and a run that ends on SIGINT or SIGTERM.
package process

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// Settings are a process's parsed settings.
type Settings interface {
	LogLevel() slog.Level
}

// Main parses the command line with parse (exit 0 after -help, exit 2 on invalid settings),
// sets up logging and tracing for the process called name, and calls run with a context that
// ends on SIGINT or SIGTERM. Traces are flushed before exit; an error from run exits 1.
func Main[S Settings](name string, parse func(args []string) (S, error), run func(ctx context.Context, s S, logger *slog.Logger) error) {
	s, err := parse(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	logger := telemetry.NewLogger(os.Stderr, name, s.LogLevel())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = runWithTracing(ctx, name, func(ctx context.Context) error { return run(ctx, s, logger) })
	stop()
	if err != nil {
		logger.Error(name+" stopped", "err", err)
		os.Exit(1)
	}
}

func runWithTracing(ctx context.Context, name string, run func(context.Context) error) error {
	shutdown, err := telemetry.SetupTracing(ctx, name)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdown(ctx)
	}()
	return run(ctx)
}
