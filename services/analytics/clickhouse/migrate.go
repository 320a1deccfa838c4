package clickhouse

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/pressly/goose/v3"
	goosedb "github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/database/dialect"

	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse/migrations"
)

// sqlMigrations are the schema's versions in SQL, applied in order by Migrate with the Go ones
// (goMigrations). 00001 adopts the tables that the unversioned schema of earlier releases
// created.
//
//go:embed migrations/*.sql
var sqlMigrations embed.FS

// goMigrations are the versions written in Go, where SQL cannot be made safe to run again
// (see migrations.EventsV2), for a shard of layout.
func goMigrations(layout Layout) []*goose.Migration {
	return []*goose.Migration{
		goose.NewGoMigration(migrations.EventsV2Version, &goose.GoFunc{RunDB: migrations.EventsV2(layout)}, &goose.GoFunc{Mode: goose.TransactionDisabled}),
	}
}

// Layout is where a database sits in the ClickHouse cluster: the cluster its Distributed tables
// read through (default migrations.DefaultCluster) and its shard's index and the number of
// shards (default 0 of 1). A migration that moves rows keeps on a shard those of its stream
// partitions (stream_part % ShardCount == ShardIndex).
type Layout = migrations.Layout

// SingleNode is the layout of one server, the default: cluster cm_analytics, one shard.
var SingleNode = Layout{Cluster: migrations.DefaultCluster, ShardIndex: 0, ShardCount: 1}

// VersionTable records the applied migrations (goose's default name, as for PostgreSQL).
const VersionTable = "goose_db_version"

// Migrate applies the migrations the database lacks, as user (the writer, which owns the
// schema), with goose over clickhouse-go's database/sql driver. ClickHouse has no
// transactions: each migration runs outside one and is written so that running it again is
// safe (IF NOT EXISTS, …), which completes one interrupted midway. There is no lock: one process
// migrates, writer 0 (services/analytics/app), every shard in order; the others wait for it
// (WaitMigrated). A migration that
// moves data runs as long as its INSERT … SELECT takes: the read timeout is an hour, not the
// queries' five minutes.
func Migrate(ctx context.Context, addr, database string, user User) error {
	return MigrateShard(ctx, addr, database, user, SingleNode)
}

// MigrateShard is Migrate for the database of one shard of layout (at addr). Run it for every
// shard of the cluster, each with its index; the Distributed tables it creates read all of them.
func MigrateShard(ctx context.Context, addr, database string, user User, layout Layout) error {
	return migrateTo(ctx, addr, database, user, layout, goose.MaxVersion)
}

// migrateTo is MigrateShard up to version (tests start from an older schema).
func migrateTo(ctx context.Context, addr, database string, user User, layout Layout, version int64) error {
	p, closeDB, err := provider(addr, database, user, layout)
	if err != nil {
		return err
	}
	defer closeDB()
	if _, err := p.UpTo(ctx, version); err != nil {
		return fmt.Errorf("migrate clickhouse schema: %w", err)
	}
	return nil
}

// WaitMigrated waits until the schema of the shard at addr has every migration, checking every
// second until ctx ends: a process that does not migrate — a writer of index above 0, which
// starts with writer 0, which migrates every shard (MigrateShard) — starts on the schema it
// was built for, never on one a migration is still changing.
func WaitMigrated(ctx context.Context, addr, database string, user User, layout Layout) error {
	p, closeDB, err := provider(addr, database, user, layout)
	if err != nil {
		return err
	}
	defer closeDB()
	for {
		pending, err := p.HasPending(ctx)
		if err == nil && !pending {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("migrations pending (writer 0 migrates every shard)")
			}
			return fmt.Errorf("wait for the clickhouse schema at %s: %w", addr, err)
		case <-time.After(time.Second):
		}
	}
}

// provider is goose over the database at addr, for layout; closeDB closes its connection.
func provider(addr, database string, user User, layout Layout) (p *goose.Provider, closeDB func(), err error) {
	opts := options(addr, database, user)
	opts.ReadTimeout = time.Hour
	db := ch.OpenDB(opts)
	closeDB = func() { _ = db.Close() }
	fsys, err := fs.Sub(sqlMigrations, "migrations")
	if err == nil {
		var store goosedb.Store
		if store, err = goosedb.NewStoreFromQuerier(VersionTable, versionQueries{}); err == nil {
			p, err = goose.NewProvider(goose.DialectCustom, db, fsys, goose.WithStore(store),
				goose.WithDisableGlobalRegistry(true), goose.WithGoMigrations(goMigrations(layout)...))
		}
	}
	if err != nil {
		closeDB()
		return nil, nil, fmt.Errorf("load clickhouse migrations: %w", err)
	}
	return p, closeDB, nil
}

// versionQueries keep goose's version table in SQL that ClickHouse 18.16 runs as well as
// current releases. goose's own ClickHouse dialect does not work on 18.16: its INSERT … VALUES
// through database/sql never returns there (the server waits for a data block the driver does
// not send), and its DELETE asks for mutations_sync, a setting 18.16 does not know.
type versionQueries struct{}

var _ dialect.Querier = versionQueries{}

func (versionQueries) CreateTable(table string) string {
	return `CREATE TABLE IF NOT EXISTS ` + table + ` (
		version_id Int64,
		is_applied UInt8,
		tstamp DateTime DEFAULT now()
	) ENGINE = MergeTree() ORDER BY version_id`
}

// InsertVersion is an INSERT … SELECT: an ordinary query on every release (see versionQueries).
func (versionQueries) InsertVersion(table string) string {
	return `INSERT INTO ` + table + ` (version_id, is_applied) SELECT $1, $2`
}

// DeleteVersion is an asynchronous mutation (18.16 cannot wait for one); it only serves goose
// down, which analytics never runs.
func (versionQueries) DeleteVersion(table string) string {
	return `ALTER TABLE ` + table + ` DELETE WHERE version_id = $1`
}

func (versionQueries) GetMigrationByVersion(table string) string {
	return `SELECT tstamp, is_applied FROM ` + table + ` WHERE version_id = $1 ORDER BY tstamp DESC LIMIT 1`
}

func (versionQueries) ListMigrations(table string) string {
	return `SELECT version_id, is_applied FROM ` + table + ` ORDER BY version_id DESC`
}

func (versionQueries) GetLatestVersion(table string) string {
	return `SELECT max(version_id) FROM ` + table
}
