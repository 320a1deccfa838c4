package app

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

// Roles are the parts of the analytics service one process runs. A scaled-out deployment runs
// one process with both (writer 0) and one writer alone per further writer index.
type Roles struct {
	// API serves the query API (gRPC on Config.Listen).
	API bool
	// Writer moves accepted events from the stream into ClickHouse.
	Writer bool
}

// Role names, as -roles takes them.
const (
	RoleAPI    = "api"
	RoleWriter = "writer"
)

// AllRoles is the default: the query API and the writer in one process.
var AllRoles = Roles{API: true, Writer: true}

// ParseRoles reads a comma-separated list of role names (api, writer), each at most once.
func ParseRoles(s string) (Roles, error) {
	var r Roles
	if strings.TrimSpace(s) == "" {
		return r, fmt.Errorf("no role named (known: %s, %s)", RoleAPI, RoleWriter)
	}
	for _, name := range strings.Split(s, ",") {
		var role *bool
		switch strings.TrimSpace(name) {
		case RoleAPI:
			role = &r.API
		case RoleWriter:
			role = &r.Writer
		default:
			return Roles{}, fmt.Errorf("unknown role %q (known: %s, %s)", name, RoleAPI, RoleWriter)
		}
		if *role {
			return Roles{}, fmt.Errorf("role %q named twice", name)
		}
		*role = true
	}
	return r, nil
}

// String is the comma-separated list ParseRoles reads.
func (r Roles) String() string {
	var names []string
	if r.API {
		names = append(names, RoleAPI)
	}
	if r.Writer {
		names = append(names, RoleWriter)
	}
	return strings.Join(names, ",")
}

// ParseShards reads a comma-separated list of ClickHouse native addresses, in shard order.
func ParseShards(s string) []string {
	var addrs []string
	for _, a := range strings.Split(s, ",") {
		addrs = append(addrs, strings.TrimSpace(a))
	}
	return addrs
}

// Shards are the ClickHouse shards' addresses in shard order: ClickHouseShards, or the single
// ClickHouseAddr when none are named.
func (c Config) Shards() []string {
	if len(c.ClickHouseShards) == 0 {
		return []string{c.ClickHouseAddr}
	}
	return c.ClickHouseShards
}

// CheckScaleOut records in p what is wrong with the shards, the writer's index and count, and
// the roles. The flag names are cmd/analytics'.
func (c Config) CheckScaleOut(p *config.Problems) {
	shards := c.Shards()
	p.Check(len(shards) <= natsjs.Partitions, "-clickhouse-shards names %d shards; at most %d (the stream's partitions: a shard holds whole partitions)", len(shards), natsjs.Partitions)
	for i, a := range shards {
		p.Check(a != "", "-clickhouse-shards: shard %d has no address", i)
		p.Check(a == "" || !slices.Contains(shards[:i], a), "-clickhouse-shards: %s is named twice", a)
	}
	if len(c.ClickHouseShards) > 0 {
		p.Check(c.ClickHouseAddr == shards[0], "-clickhouse-addr (%s) must be the first of -clickhouse-shards (%s) or left out", c.ClickHouseAddr, shards[0])
	}
	p.Check(c.WriterCount >= 1 && c.WriterCount <= natsjs.Partitions, "-writer-count must be 1 to %d (the stream's partitions), not %d", natsjs.Partitions, c.WriterCount)
	p.Check(c.WriterIndex >= 0 && c.WriterIndex < c.WriterCount, "-writer-index must be 0 or more and below -writer-count (%d), not %d", c.WriterCount, c.WriterIndex)
	p.Check(c.Roles.API || c.Roles.Writer, "-roles names no role (known: %s, %s)", RoleAPI, RoleWriter)
}

// openShards connects the writer user to every shard, in shard order, into shardConns (conn
// is the first), closed by Close. Writer 0 brings each shard's schema up to date, in shard
// order; every other process waits until it has (clickhouse.OpenShard).
func (a *App) openShards(ctx context.Context, cfg Config, user clickhouse.User) error {
	shards := cfg.Shards()
	migrate := cfg.Roles.Writer && cfg.WriterIndex == 0
	for i, addr := range shards {
		layout := clickhouse.SingleNode
		layout.ShardIndex, layout.ShardCount = i, len(shards)
		conn, err := clickhouse.OpenShard(ctx, addr, cfg.Database, user, layout, migrate)
		if err != nil {
			return fmt.Errorf("clickhouse shard %d: %w", i, err)
		}
		a.OnClose(func() { _ = conn.Close() })
		a.shardConns = append(a.shardConns, conn)
	}
	a.conn = a.shardConns[0]
	return nil
}

// MarshalText is String (Roles is a flag.TextVar).
func (r Roles) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText is ParseRoles.
func (r *Roles) UnmarshalText(b []byte) error {
	roles, err := ParseRoles(string(b))
	if err != nil {
		return err
	}
	*r = roles
	return nil
}
