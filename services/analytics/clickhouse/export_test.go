package clickhouse

// MigrateTo applies the migrations up to version only, for tests of a later migration on a
// database of an older schema.
var MigrateTo = migrateTo
