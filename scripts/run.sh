#!/usr/bin/env bash
# Runs the mesh: every service as its own process with prefixed logs (also in .state/logs).
#   scripts/run.sh up    start the services (infrastructure must be up: scripts/devenv.sh up),
#                        wait until the gateway answers, print how to use it, and stay in the
#                        foreground; Ctrl-C stops the services and the infrastructure.
#   scripts/run.sh stop  stop the services started by `up` (from another terminal).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="$ROOT/.state"
RUN="$STATE/run"
CERTS="$STATE/certs"
SERVICES=(auth ingest analytics campaigns gateway) # start order
GATEWAY_ADDR="${CM_GATEWAY_LISTEN:-127.0.0.1:8443}"

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

stop_services() {
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
    local name=${SERVICES[i]}
    if alive "$name"; then
      local pid; pid=$(cat "$RUN/$name.pid")
      rm -f "$RUN/$name.pid" # first, so a foreground `up` sees a requested stop, not a crash
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      echo "run: stopped $name"
    fi
    rm -f "$RUN/$name.pid"
  done
}

# wait_http URL SECONDS NAME: poll until URL answers 200.
wait_http() {
  for _ in $(seq 1 $(($2 * 5))); do
    if curl -fsS --max-time 1 --cacert "$CERTS/ca.pem" -o /dev/null "$1" 2>/dev/null; then return 0; fi
    alive "$3" || { echo "run: $3 exited during start; see $STATE/logs/$3.log" >&2; return 1; }
    sleep 0.2
  done
  echo "run: $3 not ready after $2 s; see $STATE/logs/$3.log" >&2
  return 1
}

start() {
  local name=$1; shift
  if alive "$name"; then echo "run: $name already running (pid $(cat "$RUN/$name.pid"))"; return; fi
  echo "run: starting $name"
  "$@" > >(tee -a "$STATE/logs/$name.log" | sed -u "s/^/[$name] /") 2>&1 &
  echo $! >"$RUN/$name.pid"
}

up() {
  mkdir -p "$RUN" "$STATE/logs"
  # shellcheck disable=SC1091
  . "$STATE/env"
  export CM_AUTH_POSTGRES_URL="${CM_AUTH_POSTGRES_URL:-$CM_POSTGRES_URL/auth?sslmode=disable}"
  export CM_CAMPAIGNS_POSTGRES_URL="${CM_CAMPAIGNS_POSTGRES_URL:-$CM_POSTGRES_URL/campaigns?sslmode=disable}"
  export CM_AUTH_BOOTSTRAP_DIR="${CM_AUTH_BOOTSTRAP_DIR:-$STATE/bootstrap}"
  export CM_INGEST_NATS_URL="${CM_INGEST_NATS_URL:-$CM_NATS_URL}" CM_ANALYTICS_NATS_URL="${CM_ANALYTICS_NATS_URL:-$CM_NATS_URL}"
  export CM_ANALYTICS_CLICKHOUSE_ADDR="${CM_ANALYTICS_CLICKHOUSE_ADDR:-$CM_CLICKHOUSE_ADDR}"
  for svc in auth ingest analytics campaigns gateway; do
    prefix="CM_$(echo "$svc" | tr a-z A-Z)"
    export "${prefix}_TLS_CERT=$CERTS/$svc.pem" "${prefix}_TLS_KEY=$CERTS/$svc-key.pem" "${prefix}_TLS_CA=$CERTS/ca.pem"
  done
  export CM_GATEWAY_EDGE_TLS_CERT="$CERTS/edge.pem" CM_GATEWAY_EDGE_TLS_KEY="$CERTS/edge-key.pem"

  trap 'echo; echo "run: stopping"; stop_services; "$ROOT/scripts/devenv.sh" down; exit 0' INT TERM
  # The key that encrypts auth's token signing keys at rest: made once, given to auth alone.
  if [ ! -s "$STATE/secrets/auth-kek" ]; then
    mkdir -p -m 700 "$STATE/secrets"
    (umask 077; printf 'dev1:%s\n' "$(head -c32 /dev/urandom | base64 -w0)" >"$STATE/secrets/auth-kek")
  fi
  start auth env CM_AUTH_KEY_ENCRYPTION_KEYS_FILE="$STATE/secrets/auth-kek" "$ROOT/bin/auth"
  wait_http "http://127.0.0.1:9101/healthz" 60 auth
  start ingest "$ROOT/bin/ingest"
  wait_http "http://127.0.0.1:9102/healthz" 30 ingest
  start analytics "$ROOT/bin/analytics"
  wait_http "http://127.0.0.1:9104/healthz" 30 analytics
  start campaigns "$ROOT/bin/campaigns"
  wait_http "http://127.0.0.1:9103/healthz" 30 campaigns
  start gateway "$ROOT/bin/gateway"
  wait_http "https://localhost:${GATEWAY_ADDR##*:}/healthz" 30 gateway

  cat <<MSG

CampaignMesh is up.
  gateway (REST + gRPC)  https://localhost:${GATEWAY_ADDR##*:}   (dev CA: .state/certs/ca.pem)
  OpenAPI                https://localhost:${GATEWAY_ADDR##*:}/openapi.json
  first credentials      .state/bootstrap/admin.json      tenant "acme" admin
                         .state/bootstrap/operator.json   platform operator
  logs                   .state/logs/<service>.log

Try, in another terminal:
  bin/cmesh login -f .state/bootstrap/admin.json && bin/cmesh whoami
  curl --cacert .state/certs/ca.pem https://localhost:${GATEWAY_ADDR##*:}/v1/auth/login -d @.state/bootstrap/admin.json

Ctrl-C (or make stop) stops everything.
MSG
  # Stay in the foreground until a service exits or we are interrupted.
  all_alive() { for s in "${SERVICES[@]}"; do alive "$s" || return 1; done; }
  while all_alive; do sleep 1; done
  stopped=0
  for s in "${SERVICES[@]}"; do [ -f "$RUN/$s.pid" ] || stopped=1; done
  if [ $stopped = 1 ]; then
    echo "run: stopped (make stop)"
    exit 0
  fi
  echo "run: a service exited; stopping the rest" >&2
  stop_services
  exit 1
}

case "${1:-}" in
  up) up ;;
  stop) stop_services ;;
  *) echo "usage: $0 up|stop" >&2; exit 2 ;;
esac
