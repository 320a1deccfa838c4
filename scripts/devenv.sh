#!/usr/bin/env bash
# devenv.sh - local dev infrastructure for CampaignMesh: PostgreSQL, ClickHouse, NATS JetStream.
# Plain background processes (no systemd/docker), all state under $ROOT/.state, 127.0.0.1 only.
#   scripts/devenv.sh up|down|status
# Ports can be moved with CM_DEV_PG_PORT, CM_DEV_CH_TCP, CM_DEV_CH_HTTP, CM_DEV_NATS_PORT and
# CM_DEV_NATS_MON (e.g. for a second instance from another checkout).
# CM_DEV_CH_SHARDS=N (1 to 8, default 1) runs N ClickHouse servers as the N shards of cluster
# cm_analytics: server k (from 0) in .state/clickhouse<k+1> (the first in .state/clickhouse),
# on ports CM_DEV_CH_TCP+k and CM_DEV_CH_HTTP+k, with the same users, passwords and database.
# up stops the running servers beyond N (their data stays), so the cluster that every server's
# config names is exactly the servers that run.
# Every NATS client and ClickHouse role has its own user; the passwords are generated once into
# .state/secrets/ (mode 600) and .state/env names the files (see docs/security.md).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=$ROOT/.state
LOGS=$STATE/logs
SECRETS=$STATE/secrets
PG_DIR=$STATE/postgres PG_DATA=$STATE/postgres/data PG_RUN=$STATE/postgres/run PG_PORT=${CM_DEV_PG_PORT:-15432}
CH_TCP=${CM_DEV_CH_TCP:-19000} CH_HTTP=${CM_DEV_CH_HTTP:-18123} CH_SHARDS=${CM_DEV_CH_SHARDS:-1} CH_MAX_SHARDS=8
CH_SERVER=/usr/sbin/clickhouse-server
NATS_DIR=$STATE/nats NATS_PID=$STATE/nats/nats.pid NATS_PORT=${CM_DEV_NATS_PORT:-14222} NATS_MON=${CM_DEV_NATS_MON:-18222}
NATS_CONF=$ROOT/deploy/nats.conf
NATS_BIN=$ROOT/bin/nats-server NATS_VERSION=v2.15.2
DBS=(auth campaigns dsr delivery billing)

say() { echo "devenv: $*"; }
die() { echo "devenv: error: $*" >&2; exit 1; }
# die_log MSG LOGFILE...: die, showing the last lines of the given logs.
die_log() { local m=$1; shift; die "$m; last log lines:
$(tail -n 8 "$@" 2>/dev/null)"; }
IS_ROOT=0; [ "$(id -u)" -eq 0 ] && IS_ROOT=1

# as USER CMD...: when root, run CMD as a service account (postgres refuses to run as root).
as() { local u=$1; shift; if [ $IS_ROOT = 1 ]; then runuser -u "$u" -- "$@"; else "$@"; fi; }

# wait_for SECONDS CMD...: poll CMD until it succeeds; non-zero on timeout or as soon
# as the process we just started (pid in $WATCH, if set) has exited.
WATCH=
wait_for() {
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    [ -z "$WATCH" ] || kill -0 "$WATCH" 2>/dev/null || return 1
    sleep 0.2
  done
}

# alive PIDFILE PATTERN: first line of PIDFILE is a live, non-zombie process whose
# command line contains PATTERN (guards against stale pid files and pid reuse).
alive() {
  local pid; pid=$(head -n1 "$1" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ "$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" != Z ] || return 1
  grep -qa -- "$2" "/proc/$pid/cmdline" 2>/dev/null
}
dead() { ! alive "$@"; }
pg_alive() { alive "$PG_DATA/postmaster.pid" postgres; }
# The ClickHouse server of shard k (from 0): its name (clickhouse, clickhouse2, …; also its
# directory under .state and its logs' names), pid file and ports.
ch_name() { if [ "$1" = 0 ]; then echo clickhouse; else echo "clickhouse$(($1 + 1))"; fi; }
ch_dir() { echo "$STATE/$(ch_name "$1")"; }
ch_pid() { echo "$(ch_dir "$1")/clickhouse.pid"; }
ch_tcp() { echo $((CH_TCP + $1)); }
ch_http() { echo $((CH_HTTP + $1)); }
ch_alive() { alive "$(ch_pid "${1:-0}")" clickhouse-server; }
nats_alive() { alive "$NATS_PID" nats-server; }

# Newest installed PostgreSQL server, e.g. /usr/lib/postgresql/15/bin (empty if none).
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }
# ch_query SQL: as the admin (default) user. 18.16's client reads no password variable; its
# config file (written by ensure_secrets) keeps the password out of the process list.
# ch_query K SQL: on shard K's server.
ch_query() { clickhouse-client --config-file "$SECRETS/clickhouse-client.xml" --host 127.0.0.1 --port "$(ch_tcp "$1")" --query "$2"; }

# ensure_secrets: generate each missing password once (hex, so it needs no quoting in XML,
# NATS config or URLs); they survive restarts and are removed only with .state (make clean).
ensure_secrets() {
  mkdir -p "$SECRETS"; chmod 700 "$SECRETS"
  local n
  for n in nats-admin nats-ingest nats-analytics nats-gateway nats-dsr nats-delivery nats-billing clickhouse-default clickhouse-writer clickhouse-reader \
    postgres-admin postgres-auth postgres-campaigns postgres-dsr postgres-delivery postgres-billing; do
    [ -s "$SECRETS/$n" ] && continue
    (umask 077; od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$SECRETS/$n.tmp") && mv "$SECRETS/$n.tmp" "$SECRETS/$n"
  done
  # The mesh's privacy key (dsr, ingest, analytics, delivery: -privacy-key-file): base64 of 32 random
  # bytes, created once. Every subject hash of the suppression lists is keyed with it, so a
  # new key would stop them matching: it is never regenerated.
  if [ ! -s "$SECRETS/privacy-key" ]; then
    (umask 077; head -c32 /dev/urandom | base64 -w0 >"$SECRETS/privacy-key.tmp") && mv "$SECRETS/privacy-key.tmp" "$SECRETS/privacy-key"
  fi
  # PostgreSQL clients read passwords from a pgpass file named in the URL (passfile=…): one per
  # role, so each service is given its own and nothing else.
  local r
  for r in admin auth campaigns dsr delivery billing; do
    local role=$r; [ $r = admin ] && role=campaignmesh
    (umask 077; printf '*:*:*:%s:%s\n' "$role" "$(cat "$SECRETS/postgres-$r")" >"$SECRETS/pgpass-$r")
  done
  (umask 077; printf '<config><user>default</user><password>%s</password></config>\n' \
    "$(cat "$SECRETS/clickhouse-default")" >"$SECRETS/clickhouse-client.xml")
  chmod 600 "$SECRETS"/*
}
# ch_hash NAME: SHA-256 (hex) of a ClickHouse password, for password_sha256_hex.
ch_hash() { printf %s "$(cat "$SECRETS/clickhouse-$1")" | sha256sum | cut -d' ' -f1; }
# healthz also checks JetStream; fall back to a plain TCP probe where curl is missing.
nats_ready() { if command -v curl >/dev/null; then curl -fsS "http://127.0.0.1:$NATS_MON/healthz"
  else (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT"); fi; }

# check_access USER DIR: the service account must be able to reach DIR (every parent dir
# needs o+x; a 700 home directory above the repo breaks this).
check_access() {
  [ $IS_ROOT = 1 ] || return 0
  id "$1" >/dev/null 2>&1 || die "system user '$1' does not exist (package not installed correctly?)"
  runuser -u "$1" -- test -x "$2" -a -w "$2" ||
    die "user '$1' cannot access $2: every directory above $ROOT must be traversable by others (chmod o+x), e.g. not a 700 home dir - or clone the repo elsewhere"
}

ensure_packages() {
  local pgb; pgb=$(pg_bin)
  [ -n "$pgb" ] && [ -x "$pgb/initdb" ] && [ -x $CH_SERVER ] && command -v clickhouse-client >/dev/null && return 0
  local sudo=
  [ $IS_ROOT = 1 ] || sudo=sudo
  [ -z "$sudo" ] || command -v sudo >/dev/null ||
    die "postgresql/clickhouse missing and no sudo; as root run: apt-get install postgresql clickhouse-server clickhouse-client"
  say "installing postgresql clickhouse-server clickhouse-client (apt, log: .state/logs/apt.log)"
  # Without systemd (containers/CI) the package postinsts would start the *system* instances
  # via init scripts; a temporary policy-rc.d (exit 101) vetoes that.
  if [ ! -d /run/systemd/system ] && [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 755 /usr/sbin/policy-rc.d
    trap "$sudo rm -f /usr/sbin/policy-rc.d" EXIT
  fi
  { $sudo apt-get update &&
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql clickhouse-server clickhouse-client
  } >>"$LOGS/apt.log" 2>&1 9>&- || die_log "apt-get failed" "$LOGS/apt.log"
  [ -n "$(pg_bin)" ] || die "PostgreSQL server binaries still missing under /usr/lib/postgresql"
}

postgres_up() {
  local bin; bin=$(pg_bin)
  mkdir -p "$PG_RUN"
  touch "$LOGS/postgres.log"
  if [ $IS_ROOT = 1 ]; then chown postgres: "$PG_DIR" "$PG_RUN" "$LOGS/postgres.log"; fi
  check_access postgres "$PG_DIR"
  local was=
  if pg_alive; then was=" (was running)"; else
    if [ ! -s "$PG_DATA/PG_VERSION" ]; then
      as postgres "$bin/initdb" -D "$PG_DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 >>"$LOGS/postgres.log" 2>&1 ||
        die_log "initdb failed" "$LOGS/postgres.log"
      echo "include 'devenv.conf'" >>"$PG_DATA/postgresql.conf"
    fi
    local v; v=$(cat "$PG_DATA/PG_VERSION")
    [ "$bin" = "/usr/lib/postgresql/$v/bin" ] ||
      die "cluster in $PG_DATA is PostgreSQL $v but $bin is installed; remove $PG_DIR to recreate it"
    # Rewritten on every start so changes here take effect. fsync/synchronous_commit off:
    # throwaway dev/test data, much faster CREATE DATABASE and commits.
    cat >"$PG_DATA/devenv.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_RUN'
unix_socket_permissions = 0700
fsync = off
synchronous_commit = off
EOF
    # pg_ctl detaches the postmaster (own session), so it outlives this script.
    # 9>&- everywhere a daemon is spawned: it must not inherit (and hold) the lock fd.
    as postgres "$bin/pg_ctl" start -D "$PG_DATA" -l "$LOGS/postgres.log" -w -t 30 -s >/dev/null 2>&1 9>&- ||
      die_log "postgres failed to start" "$LOGS/postgres.log"
  fi
  wait_for 30 "$bin/pg_isready" -q -h 127.0.0.1 -p $PG_PORT ||
    die_log "postgres not ready after 30s" "$LOGS/postgres.log"
  # Idempotent roles + databases (local socket, trust auth as superuser postgres). Each service
  # has its own role that owns its database and can connect to no other; campaignmesh is the
  # admin of tests and tools (it creates their throwaway databases). Passwords are generated
  # (ensure_secrets). A database made by an older devenv, owned by campaignmesh, is handed over.
  {
    echo "SELECT 'CREATE ROLE campaignmesh' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'campaignmesh') \\gexec"
    echo "ALTER ROLE campaignmesh LOGIN CREATEDB PASSWORD '$(cat "$SECRETS/postgres-admin")';"
    for db in "${DBS[@]}"; do
      echo "SELECT 'CREATE ROLE $db' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$db') \\gexec"
      echo "ALTER ROLE $db LOGIN NOCREATEDB NOCREATEROLE PASSWORD '$(cat "$SECRETS/postgres-$db")';"
      echo "SELECT 'CREATE DATABASE $db OWNER $db' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db') \\gexec"
      echo "ALTER DATABASE $db OWNER TO $db;"
      echo "REVOKE ALL ON DATABASE $db FROM PUBLIC;"
      echo "\\connect $db"
      echo "REASSIGN OWNED BY campaignmesh TO $db;"
      echo "\\connect postgres"
    done
  } | "$bin/psql" -h "$PG_RUN" -p $PG_PORT -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 >/dev/null ||
    die "creating roles/databases failed"
  say "postgres ready on 127.0.0.1:$PG_PORT, databases: ${DBS[*]}$was"
}

# clickhouse_config K: shard K's server config. Self-contained 18.16 config (users included:
# users_config defaults to this file). No interserver_http_port: no replication, so nothing
# listens on 9009. mark_cache_size is mandatory in 18.16 (else: "Not found: mark_cache_size").
clickhouse_config() {
  local k=$1 name dir; name=$(ch_name "$1") dir=$(ch_dir "$1")
  cat <<EOF
<?xml version="1.0"?>
<!-- Generated by scripts/devenv.sh on every start; edit the script, not this file. -->
<yandex>
  <logger><level>information</level><size>100M</size><count>3</count>
    <log>$LOGS/$name.log</log><errorlog>$LOGS/$name.err.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>$(ch_tcp "$k")</tcp_port>
  <http_port>$(ch_http "$k")</http_port>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <default_profile>default</default_profile>
  <!-- 18.16 has only users.xml: no SQL users or GRANTs, so rights are per user, not per table.
       default (admin: devenv, tests creating databases) and analytics_writer (schema,
       inserts, ALTER ... DELETE mutations) may do everything; analytics_reader is readonly=2:
       reads and per-query settings, no INSERT, no DDL. readonly=1 would refuse the settings
       analytics sends with each query (its configured limits); 18.16 has no settings
       constraints, so these limits are the profile's defaults, not caps. -->
  <profiles>
    <default/>
    <reader>
      <readonly>2</readonly>
      <max_execution_time>10</max_execution_time>
      <max_memory_usage>4294967296</max_memory_usage>
      <max_result_rows>100000</max_result_rows>
    </reader>
  </profiles>
  <quotas><default/></quotas>
  <users>
    <default><password_sha256_hex>$(ch_hash default)</password_sha256_hex><profile>default</profile><quota>default</quota>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks></default>
    <analytics_writer><password_sha256_hex>$(ch_hash writer)</password_sha256_hex><profile>default</profile><quota>default</quota>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks></analytics_writer>
    <analytics_reader><password_sha256_hex>$(ch_hash reader)</password_sha256_hex><profile>reader</profile><quota>default</quota>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks></analytics_reader>
  </users>
  <!-- cm_analytics is the cluster analytics' Distributed tables (events, events_hourly) read
       through: one shard per server of CM_DEV_CH_SHARDS, in shard order (this server's shard
       is queried in-process). Remote shards are read with the reader's credentials. -->
  <remote_servers>
    <cm_analytics>
$(for ((i = 0; i < CH_SHARDS; i++)); do
  echo "      <shard><replica><host>127.0.0.1</host><port>$(ch_tcp $i)</port><user>analytics_reader</user><password>$(cat "$SECRETS/clickhouse-reader")</password></replica></shard>"
done)
    </cm_analytics>
  </remote_servers>
</yandex>
EOF
}

# clickhouse_up K: start shard K's server (or rewrite its config, which a running one reloads).
clickhouse_up() {
  local k=$1 was= name dir pid; name=$(ch_name "$1") dir=$(ch_dir "$1") pid=$(ch_pid "$1")
  mkdir -p "$dir"
  # Written on every start: a running server reloads users and remote_servers from it.
  (umask 077; clickhouse_config "$k" >"$dir/config.xml.new") && mv "$dir/config.xml.new" "$dir/config.xml"  # holds passwords
  [ $IS_ROOT = 0 ] || chown clickhouse: "$dir/config.xml"
  if ch_alive "$k"; then was=" (was running)"; else
    # The server creates and rotates its logs itself, so it needs write access to the log dir.
    if [ $IS_ROOT = 1 ]; then chown -R clickhouse: "$dir"; chgrp clickhouse "$LOGS"; chmod 775 "$LOGS"; fi
    check_access clickhouse "$dir"
    # Not --daemon: that exits 0 even when startup fails and discards early errors (e.g. a
    # config parse error); run in the background with stderr in clickhouse.stderr.log.
    # 18.16 only honours --pid-file in --daemon mode, so we write the pid file ourselves:
    # setsid and setpriv both exec in place, hence $! is the server's own pid.
    local runas=(); [ $IS_ROOT = 0 ] || runas=(setpriv --reuid=clickhouse --regid=clickhouse --init-groups)
    setsid "${runas[@]}" $CH_SERVER --config-file="$dir/config.xml" \
      </dev/null >>"$LOGS/$name.stderr.log" 2>&1 9>&- &
    WATCH=$!; echo $! >"$pid"
  fi
  wait_for 60 ch_query "$k" 'SELECT 1' ||
    die_log "$name did not become ready (see also $LOGS/$name.log)" "$LOGS/$name.stderr.log" "$LOGS/$name.err.log"
  WATCH=
  ch_query "$k" 'CREATE DATABASE IF NOT EXISTS analytics'
  say "$name ready on 127.0.0.1:$(ch_tcp "$k") (http $(ch_http "$k")), database: analytics, shard $((k + 1)) of $CH_SHARDS$was"
}

# clickhouse_shards_up: shards 0..CH_SHARDS-1 up, and the servers of a larger count stopped
# (the cluster every config names has only the first CH_SHARDS; data stays on disk).
clickhouse_shards_up() {
  local k
  for ((k = 0; k < CH_SHARDS; k++)); do clickhouse_up "$k"; done
  for ((k = CH_SHARDS; k < CH_MAX_SHARDS; k++)); do
    if ch_alive "$k"; then
      say "$(ch_name "$k") is not a shard with CM_DEV_CH_SHARDS=$CH_SHARDS; stopping it (its data stays in $(ch_dir "$k"))"
      stop_pid "$(ch_name "$k")" "$(ch_pid "$k")" clickhouse-server
    fi
  done
}

# ch_shard_addrs: the shards' native addresses, comma-separated, in shard order.
ch_shard_addrs() {
  local k out=
  for ((k = 0; k < CH_SHARDS; k++)); do out+="${out:+,}127.0.0.1:$(ch_tcp "$k")"; done
  echo "$out"
}

# nats_env_stale: the running server lacks a $NATS_*_PASSWORD variable deploy/nats.conf now
# references (a user added since it started, e.g. dsr): a reload would fail on it.
nats_env_stale() {
  local v env="/proc/$(head -n1 "$NATS_PID")/environ"
  [ -r "$env" ] || return 1
  for v in $(grep -o '\$NATS_[A-Z_]*_PASSWORD' "$NATS_CONF" | tr -d '$' | sort -u); do
    grep -qz "^$v=" "$env" || return 0
  done
  return 1
}

nats_up() {
  if [ ! -x "$NATS_BIN" ]; then
    local go; go=$(command -v go || echo /usr/local/go/bin/go); [ -x "$go" ] || die "go not found (needed to build nats-server)"
    say "building nats-server $NATS_VERSION into bin/ (log: .state/logs/nats-build.log)"
    # Run outside the repo so its go.mod (toolchain line etc.) cannot interfere.
    (cd / && GOBIN="$ROOT/bin" "$go" install "github.com/nats-io/nats-server/v2@$NATS_VERSION") \
      >>"$LOGS/nats-build.log" 2>&1 || die_log "go install nats-server failed" "$LOGS/nats-build.log"
  fi
  local was=
  if nats_alive && nats_env_stale; then
    say "nats runs without a password deploy/nats.conf now needs; restarting it (streams are on disk)"
    stop_pid nats "$NATS_PID" nats-server
  fi
  if nats_alive; then
    # A running server re-reads deploy/nats.conf (its permissions may have changed since).
    was=" (was running; config reloaded)"; kill -HUP "$(cat "$NATS_PID")"
  else
    mkdir -p "$NATS_DIR"; rm -f "$NATS_PID" "$NATS_DIR/nats.conf"
    # The compose stack's config (users, permissions, fsync on every write); its passwords come
    # from the server's environment. setsid + nohup: own session, survives this script.
    NATS_ADMIN_PASSWORD=$(cat "$SECRETS/nats-admin") NATS_INGEST_PASSWORD=$(cat "$SECRETS/nats-ingest") \
    NATS_ANALYTICS_PASSWORD=$(cat "$SECRETS/nats-analytics") NATS_GATEWAY_PASSWORD=$(cat "$SECRETS/nats-gateway") \
    NATS_DSR_PASSWORD=$(cat "$SECRETS/nats-dsr") NATS_DELIVERY_PASSWORD=$(cat "$SECRETS/nats-delivery") \
    NATS_BILLING_PASSWORD=$(cat "$SECRETS/nats-billing") \
    setsid nohup "$NATS_BIN" -c "$NATS_CONF" -js -sd "$NATS_DIR" -a 127.0.0.1 -p $NATS_PORT -m $NATS_MON \
      -P "$NATS_PID" -l "$LOGS/nats.log" </dev/null >>"$LOGS/nats.log" 2>&1 9>&- &
    WATCH=$!
  fi
  wait_for 30 nats_ready || die_log "nats did not become ready" "$LOGS/nats.log"
  WATCH=
  say "nats ready on 127.0.0.1:$NATS_PORT, jetstream, monitor $NATS_MON$was"
}

write_env() {
  # KEY=value lines: sourceable by sh and usable via make's `include`.
  cat >"$STATE/env.tmp" <<EOF
CM_POSTGRES_URL=postgres://campaignmesh@127.0.0.1:$PG_PORT/postgres?passfile=$SECRETS/pgpass-admin
CM_POSTGRES_ADDR=127.0.0.1:$PG_PORT
CM_CLICKHOUSE_ADDR=127.0.0.1:$CH_TCP
CM_CLICKHOUSE_SHARDS=$(ch_shard_addrs)
CM_NATS_URL=nats://127.0.0.1:$NATS_PORT
CM_SECRETS_DIR=$SECRETS
CM_CLICKHOUSE_USER=default
CM_CLICKHOUSE_PASSWORD_FILE=$SECRETS/clickhouse-default
CM_CLICKHOUSE_WRITER_USER=analytics_writer
CM_CLICKHOUSE_WRITER_PASSWORD_FILE=$SECRETS/clickhouse-writer
CM_CLICKHOUSE_READER_USER=analytics_reader
CM_CLICKHOUSE_READER_PASSWORD_FILE=$SECRETS/clickhouse-reader
CM_NATS_ADMIN_USER=admin
CM_NATS_ADMIN_PASSWORD_FILE=$SECRETS/nats-admin
EOF
  mv "$STATE/env.tmp" "$STATE/env" && say "wrote .state/env"
}

# stop_pid NAME PIDFILE PATTERN: SIGTERM, wait up to 30s, then SIGKILL.
stop_pid() {
  if ! alive "$2" "$3"; then say "$1 not running"; rm -f "$2"; return 0; fi
  kill "$(head -n1 "$2")" 2>/dev/null || true
  if ! wait_for 30 dead "$2" "$3"; then
    kill -9 "$(head -n1 "$2")" 2>/dev/null || true
    wait_for 5 dead "$2" "$3" || die "could not stop $1"
  fi
  rm -f "$2" && say "$1 stopped"
}

cmd_up() {
  [[ $CH_SHARDS =~ ^[1-9]$ ]] && [ "$CH_SHARDS" -le $CH_MAX_SHARDS ] ||
    die "CM_DEV_CH_SHARDS must be 1 to $CH_MAX_SHARDS (a shard holds whole stream partitions), not '$CH_SHARDS'"
  mkdir -p "$LOGS"; chmod 755 "$STATE"
  exec 9>"$STATE/.lock"; flock 9   # serialize concurrent up/down (see 9>&- below)
  ensure_packages
  ensure_secrets
  postgres_up
  clickhouse_shards_up
  nats_up
  write_env
}

cmd_down() {
  [ -d "$STATE" ] || { say "nothing to stop"; return 0; }
  exec 9>"$STATE/.lock"; flock 9
  if pg_alive; then
    as postgres "$(pg_bin)/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 30 -s || die "pg_ctl stop failed"
    say "postgres stopped"
  else say "postgres not running"; fi
  local k
  for ((k = 0; k < CH_MAX_SHARDS; k++)); do
    # Every server a CM_DEV_CH_SHARDS ever started, whatever the count now.
    [ "$k" = 0 ] || [ -e "$(ch_pid "$k")" ] || continue
    stop_pid "$(ch_name "$k")" "$(ch_pid "$k")" clickhouse-server
  done
  stop_pid nats "$NATS_PID" nats-server
}

status_line() { if $2; then echo "$1: running ($3)"; else echo "$1: not running"; fi; }
cmd_status() {
  status_line postgres pg_alive "127.0.0.1:$PG_PORT"
  local k
  for ((k = 0; k < CH_MAX_SHARDS; k++)); do
    [ "$k" = 0 ] || [ -d "$(ch_dir "$k")" ] || continue
    status_line "$(ch_name "$k")" "ch_alive $k" "127.0.0.1:$(ch_tcp "$k")"
  done
  status_line nats nats_alive "127.0.0.1:$NATS_PORT"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
