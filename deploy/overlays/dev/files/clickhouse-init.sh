#!/bin/bash
# ClickHouse users of the compose stack (current ClickHouse: SQL users and GRANTs), run once by
# the image's entrypoint on an empty data volume as the admin user. The same roles as
# scripts/devenv.sh creates in 18.16's users.xml, with table-level rights:
#   analytics_writer  schema, inserts, ALTER ... DELETE mutations in the analytics database
#   analytics_reader  SELECT on the analytics database only, readonly=2, the query limits as
#                     defaults with upper bounds (settings constraints, which 18.16 lacks)
# Passwords come from the secret files (hex, so they need no quoting).
set -euo pipefail
writer=$(cat /run/secrets/clickhouse-writer)
reader=$(cat /run/secrets/clickhouse-reader)
clickhouse client --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery <<SQL
CREATE USER IF NOT EXISTS analytics_writer IDENTIFIED WITH sha256_password BY '$writer';
GRANT SELECT, INSERT, CREATE TABLE, CREATE VIEW, ALTER DELETE ON analytics.* TO analytics_writer;
CREATE SETTINGS PROFILE IF NOT EXISTS analytics_reader_limits SETTINGS
  readonly = 2 CONST,
  max_execution_time = 10 MAX 60,
  max_memory_usage = 4294967296 MAX 8589934592,
  max_result_rows = 100000 MAX 1000000;
CREATE USER IF NOT EXISTS analytics_reader IDENTIFIED WITH sha256_password BY '$reader'
  SETTINGS PROFILE analytics_reader_limits;
GRANT SELECT ON analytics.* TO analytics_reader;
SQL
