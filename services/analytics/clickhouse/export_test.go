package clickhouse

import "context"

// MigrateTo applies the migrations up to version only, for tests of a later migration on a
// database of an older schema.
func MigrateTo(ctx context.Context, addr, database string, user User, version int64) error {
	return migrateTo(ctx, addr, database, user, SingleNode, version)
}
