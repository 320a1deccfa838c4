//go:build !chaos

package main

import (
	"flag"

	"github.com/campaignmesh/campaignmesh/services/analytics/app"
)

// registerFaultFlags adds nothing: fault injection exists only in the chaos build
// (main_chaos.go), never in the binary that ships.
func registerFaultFlags(*flag.FlagSet, *app.Config) {}
