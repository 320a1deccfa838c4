package main

import (
	"context"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/campaignmesh/campaignmesh/internal/benchdata"
)

// The data set is internal/benchdata's, shared with bench-dsr; these are its names here.
type (
	dataset    = benchdata.Dataset
	tenantData = benchdata.Tenant
)

const (
	bigTenant = benchdata.BigTenant
	slots     = benchdata.Slots
	chunkRows = benchdata.ChunkRows
)

// data is the data set's part of the flags.
func (c config) data() benchdata.Config {
	return benchdata.Config{Events: c.events, SmallTenants: c.smallTenants, Campaigns: c.campaigns, Days: c.days, Seed: c.seed}
}

func plan(cfg config, end time.Time) dataset { return benchdata.Plan(cfg.data(), end) }

func load(ctx context.Context, conn driver.Conn, d dataset) (time.Duration, error) {
	return benchdata.Load(ctx, conn, d)
}

func batchRows() int { return benchdata.BatchRows() }
