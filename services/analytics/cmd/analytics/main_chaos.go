//go:build chaos

package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/campaignmesh/campaignmesh/services/analytics/app"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer/writerfault"
)

// registerFaultFlags adds the fault injection of the chaos build (go build -tags chaos; the
// e2e fault test and `make chaos` use it): -fault-exit-after-inserts n makes the process exit
// right after the writer's n-th insert, before it acknowledges the messages, as a kill -9 at
// the worst moment would.
func registerFaultFlags(fs *flag.FlagSet, c *app.Config) {
	n := fs.Int("fault-exit-after-inserts", 0, "fault injection for tests: exit right after this many inserts, before acknowledging (0: off)")
	c.WrapSink = func(s writer.Sink) writer.Sink {
		if *n <= 0 {
			return s
		}
		return writerfault.CrashAfterInserts(s, *n, func() {
			fmt.Fprintln(os.Stderr, "analytics: fault injection: exiting between insert and ack")
			os.Exit(3)
		})
	}
}
