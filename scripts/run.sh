#!/usr/bin/env bash
# Runs the mesh: every service as its own process with prefixed logs (also in .state/logs).
#   scripts/run.sh up    start the services (infrastructure must be up: scripts/devenv.sh up),
#                        wait until the gateway answers, print how to use it, and stay in the
#                        foreground; Ctrl-C stops the services and the infrastructure.
#   scripts/run.sh stop  stop the services started by `up` (from another terminal).
#   scripts/run.sh env SERVICE
#                        print the environment SERVICE is started with (secrets masked).
# Each service starts with an environment holding only its own settings (CM_<SERVICE>_*, from
# service_env below plus any the caller exported) and PATH, HOME, locale and OTEL_*: no process
# learns another's database URL, key paths or passwords. CM_RUN_STATE moves .state (tests).
# With N ClickHouse shards in .state/env (CM_CLICKHOUSE_SHARDS, from CM_DEV_CH_SHARDS=N, e.g.
# make run SHARDS=2) analytics runs the query API and writer 0 of N, and N-1 more analytics
# processes analytics-writer-<i> run writer i alone (admin listener 127.0.0.1:9104+10*i).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${CM_RUN_STATE:-$ROOT/.state}"
RUN="$STATE/run"
CERTS="$STATE/certs"
SERVICES=(auth ingest analytics campaigns standin delivery dsr billing gateway) # start order
# standin: the SendGrid and Twilio stand-ins (cmd/standin, dev only) delivery sends through:
# outboxes at http://127.0.0.1:8791/outbox (email) and http://127.0.0.1:8792/outbox (SMS); and
# the Stripe stand-in billing reports meter events to (http://127.0.0.1:8793/outbox), which sends
# signed webhooks to the gateway.
GATEWAY_ADDR="${CM_GATEWAY_LISTEN:-127.0.0.1:8443}"
# The stand-ins' Twilio account and the dev messaging service (not secrets: identifiers).
DEV_TWILIO_ACCOUNT=AC00000000000000000000000000000000
DEV_TWILIO_SERVICE=MG00000000000000000000000000000000

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# run_services: every process of this run in start order: SERVICES with, after analytics, the
# extra writers of a sharded run (WRITERS, from load_infra) and any whose pid file is left.
run_services() {
  local s i f
  for s in "${SERVICES[@]}"; do
    echo "$s"
    [ "$s" = analytics ] || continue
    for ((i = 1; i < ${WRITERS:-1}; i++)); do echo "analytics-writer-$i"; done
    for f in "$RUN"/analytics-writer-*.pid; do [ -e "$f" ] && basename "$f" .pid; done
  done | awk '!seen[$0]++'
}

stop_services() {
  local -a all; mapfile -t all < <(run_services)
  for ((i = ${#all[@]} - 1; i >= 0; i--)); do
    local name=${all[i]}
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

# load_infra: the infrastructure's addresses and secret files from devenv.sh, in this shell only
# (service_env passes each service what it needs). Not exported: the services never see them.
load_infra() {
  [ -f "$STATE/env" ] || { echo "run: $STATE/env missing; run scripts/devenv.sh up (make infra)" >&2; exit 1; }
  local line
  while IFS= read -r line; do
    [[ $line =~ ^(CM_[A-Z0-9_]+)=(.*)$ ]] && printf -v "INFRA_${BASH_REMATCH[1]}" %s "${BASH_REMATCH[2]}"
  done <"$STATE/env"
  SECRETS="${INFRA_CM_SECRETS_DIR:-$STATE/secrets}"
  # One writer per ClickHouse shard.
  local -a shards; IFS=, read -r -a shards <<<"${INFRA_CM_CLICKHOUSE_SHARDS:-x}"
  WRITERS=${#shards[@]}
}

# service_env NAME: the KEY=VALUE lines NAME starts with. Settings exported by the caller as
# CM_<NAME>_* win over these defaults; other services' variables are never passed.
service_env() {
  local svc=$1 prefix
  # analytics-writer-<i>: analytics' settings, running writer i alone (fixed: the caller's
  # settings do not change these).
  local -a fixed=()
  if [[ $svc =~ ^analytics-writer-([1-9][0-9]*)$ ]]; then
    svc=analytics
    fixed=("CM_ANALYTICS_ROLES=writer" "CM_ANALYTICS_WRITER_INDEX=${BASH_REMATCH[1]}"
      "CM_ANALYTICS_ADMIN_LISTEN=127.0.0.1:$((9104 + 10 * BASH_REMATCH[1]))")
  fi
  prefix="CM_$(echo "$svc" | tr a-z A-Z)"
  local -a own=("${prefix}_TLS_CERT=$CERTS/$svc.pem" "${prefix}_TLS_KEY=$CERTS/$svc-key.pem" "${prefix}_TLS_CA=$CERTS/ca.pem")
  case $svc in
    auth) own+=(
      "CM_AUTH_POSTGRES_URL=postgres://auth@${INFRA_CM_POSTGRES_ADDR:-}/auth?sslmode=disable&passfile=$SECRETS/pgpass-auth"
      "CM_AUTH_BOOTSTRAP_DIR=$STATE/bootstrap"
      "CM_AUTH_KEY_ENCRYPTION_KEYS_FILE=$SECRETS/auth-kek") ;;
    ingest) own+=(
      "CM_INGEST_NATS_URL=${INFRA_CM_NATS_URL:-}"
      "CM_INGEST_NATS_USER=ingest" "CM_INGEST_NATS_PASSWORD_FILE=$SECRETS/nats-ingest"
      "CM_INGEST_PRIVACY_KEY_FILE=$SECRETS/privacy-key") ;;
    analytics) own+=(
      "CM_ANALYTICS_NATS_URL=${INFRA_CM_NATS_URL:-}"
      "CM_ANALYTICS_NATS_USER=analytics" "CM_ANALYTICS_NATS_PASSWORD_FILE=$SECRETS/nats-analytics"
      "CM_ANALYTICS_CLICKHOUSE_ADDR=${INFRA_CM_CLICKHOUSE_ADDR:-}"
      "CM_ANALYTICS_CLICKHOUSE_SHARDS=${INFRA_CM_CLICKHOUSE_SHARDS:-${INFRA_CM_CLICKHOUSE_ADDR:-}}"
      "CM_ANALYTICS_WRITER_COUNT=${WRITERS:-1}"
      "CM_ANALYTICS_CLICKHOUSE_WRITER_USER=${INFRA_CM_CLICKHOUSE_WRITER_USER:-analytics_writer}"
      "CM_ANALYTICS_CLICKHOUSE_WRITER_PASSWORD_FILE=$SECRETS/clickhouse-writer"
      "CM_ANALYTICS_CLICKHOUSE_READER_USER=${INFRA_CM_CLICKHOUSE_READER_USER:-analytics_reader}"
      "CM_ANALYTICS_CLICKHOUSE_READER_PASSWORD_FILE=$SECRETS/clickhouse-reader"
      "CM_ANALYTICS_PRIVACY_KEY_FILE=$SECRETS/privacy-key") ;;
    campaigns) own+=("CM_CAMPAIGNS_POSTGRES_URL=postgres://campaigns@${INFRA_CM_POSTGRES_ADDR:-}/campaigns?sslmode=disable&passfile=$SECRETS/pgpass-campaigns") ;;
    delivery) own+=("CM_DELIVERY_POSTGRES_URL=postgres://delivery@${INFRA_CM_POSTGRES_ADDR:-}/delivery?sslmode=disable&passfile=$SECRETS/pgpass-delivery"
      "CM_DELIVERY_SENDGRID_URL=http://127.0.0.1:8791" "CM_DELIVERY_SENDGRID_API_KEY_FILE=$SECRETS/sendgrid-api-key"
      "CM_DELIVERY_SENDGRID_WEBHOOK_PUBLIC_KEY_FILE=$SECRETS/sendgrid-webhook-public-key"
      "CM_DELIVERY_TWILIO_URL=http://127.0.0.1:8792" "CM_DELIVERY_TWILIO_ACCOUNT_SID=$DEV_TWILIO_ACCOUNT"
      "CM_DELIVERY_TWILIO_AUTH_TOKEN_FILE=$SECRETS/twilio-auth-token" "CM_DELIVERY_TWILIO_MESSAGING_SERVICE_SID=$DEV_TWILIO_SERVICE"
      "CM_DELIVERY_TRACKING_KEY_FILE=$SECRETS/tracking-key" "CM_DELIVERY_PUBLIC_URL=https://localhost:${GATEWAY_ADDR##*:}"
      "CM_DELIVERY_NATS_URL=${INFRA_CM_NATS_URL:-}"
      "CM_DELIVERY_NATS_USER=delivery" "CM_DELIVERY_NATS_PASSWORD_FILE=$SECRETS/nats-delivery"
      "CM_DELIVERY_PRIVACY_KEY_FILE=$SECRETS/privacy-key") ;;
    billing) own+=(
      "CM_BILLING_LISTEN=127.0.0.1:7107" "CM_BILLING_ADMIN_LISTEN=127.0.0.1:9107"
      "CM_BILLING_POSTGRES_URL=postgres://billing@${INFRA_CM_POSTGRES_ADDR:-}/billing?sslmode=disable&passfile=$SECRETS/pgpass-billing"
      "CM_BILLING_AUTH_ADDR=127.0.0.1:7101" "CM_BILLING_ANALYTICS_ADDR=127.0.0.1:7104" "CM_BILLING_DELIVERY_ADDR=127.0.0.1:7106"
      "CM_BILLING_NATS_URL=${INFRA_CM_NATS_URL:-}"
      "CM_BILLING_NATS_USER=billing" "CM_BILLING_NATS_PASSWORD_FILE=$SECRETS/nats-billing"
      "CM_BILLING_STRIPE_URL=http://127.0.0.1:8793" "CM_BILLING_STRIPE_API_KEY_FILE=$SECRETS/stripe-api-key"
      "CM_BILLING_STRIPE_WEBHOOK_SECRET_FILE=$SECRETS/stripe-webhook-secret"
      # A dev run shows usage and meter events within seconds (defaults: 15s and 30s).
      "CM_BILLING_METER_INTERVAL=5s" "CM_BILLING_REPORT_INTERVAL=5s") ;;
    standin) ;; # flags only (see up)
    dsr) own+=(
      "CM_DSR_LISTEN=127.0.0.1:7105" "CM_DSR_ADMIN_LISTEN=127.0.0.1:9105"
      "CM_DSR_POSTGRES_URL=postgres://dsr@${INFRA_CM_POSTGRES_ADDR:-}/dsr?sslmode=disable&passfile=$SECRETS/pgpass-dsr"
      "CM_DSR_AUTH_ADDR=127.0.0.1:7101"
      "CM_DSR_NATS_URL=${INFRA_CM_NATS_URL:-}"
      "CM_DSR_NATS_USER=dsr" "CM_DSR_NATS_PASSWORD_FILE=$SECRETS/nats-dsr"
      "CM_DSR_PRIVACY_KEY_FILE=$SECRETS/privacy-key"
      "CM_DSR_KEY_ENCRYPTION_KEYS_FILE=$SECRETS/dsr-kek"
      "CM_DSR_PARTICIPANTS=analytics=127.0.0.1:7104,auth=127.0.0.1:7101,delivery=127.0.0.1:7106") ;;
    gateway) own+=("CM_GATEWAY_EDGE_TLS_CERT=$CERTS/edge.pem" "CM_GATEWAY_EDGE_TLS_KEY=$CERTS/edge-key.pem"
      "CM_GATEWAY_NATS_URL=${INFRA_CM_NATS_URL:-}"
      "CM_GATEWAY_NATS_USER=gateway" "CM_GATEWAY_NATS_PASSWORD_FILE=$SECRETS/nats-gateway"
      "CM_GATEWAY_DSR_ADDR=127.0.0.1:7105" "CM_GATEWAY_DELIVERY_ADDR=127.0.0.1:7106" "CM_GATEWAY_BILLING_ADDR=127.0.0.1:7107"
      "CM_GATEWAY_CONSOLE_SESSION_KEY_FILE=$SECRETS/console-session-key") ;;
    *) echo "run: unknown service $svc (one of: ${SERVICES[*]})" >&2; return 2 ;;
  esac
  local kv name
  for kv in "${fixed[@]}"; do echo "$kv"; done
  for kv in "${own[@]}"; do # the caller's CM_<NAME>_* override
    name=${kv%%=*}
    [[ " ${fixed[*]%%=*} " == *" $name "* ]] && continue
    if [ -n "${!name+x}" ]; then echo "$name=${!name}"; else echo "$kv"; fi
  done
  while IFS= read -r name; do # caller's settings of this service not listed above
    [[ " ${own[*]%%=*} ${fixed[*]%%=*} " == *" $name "* ]] || echo "$name=${!name}"
  done < <(compgen -e | grep "^${prefix}_" || true)
  while IFS= read -r name; do
    echo "$name=${!name}"
  done < <(compgen -e | grep -E '^(PATH|HOME|TMPDIR|TZ|LANG|LC_[A-Z]+|OTEL_[A-Z0-9_]+)$' || true)
}

# print_env NAME: service_env with secret values masked (passwords in URLs, *_PASSWORD, *_SECRET,
# *_TOKEN); paths of secret files are printed: they are not the secrets.
print_env() {
  load_infra
  service_env "$1" | sed -E 's#(://[^:/@]+:)[^@]*@#\1***@#; s#^([A-Z0-9_]*(PASSWORD|SECRET|TOKEN))=.*#\1=***#'
}

start() {
  local name=$1; shift
  if alive "$name"; then echo "run: $name already running (pid $(cat "$RUN/$name.pid"))"; return; fi
  echo "run: starting $name"
  local -a vars
  mapfile -t vars < <(service_env "$name")
  env -i "${vars[@]}" "$@" > >(tee -a "$STATE/logs/$name.log" | sed -u "s/^/[$name] /") 2>&1 &
  echo $! >"$RUN/$name.pid"
}

up() {
  mkdir -p "$RUN" "$STATE/logs"
  load_infra

  trap 'echo; echo "run: stopping"; stop_services; "$ROOT/scripts/devenv.sh" down; exit 0' INT TERM
  # The keys that encrypt auth's token signing keys and dsr's receipt signing keys at rest: made
  # once, each given to its service alone.
  local kek
  for kek in auth-kek dsr-kek; do
    if [ ! -s "$SECRETS/$kek" ]; then
      mkdir -p -m 700 "$SECRETS"
      (umask 077; printf 'dev1:%s\n' "$(head -c32 /dev/urandom | base64 -w0)" >"$SECRETS/$kek")
    fi
  done
  # The key that seals the web console's session cookies (console sessions survive a restart).
  if [ ! -s "$SECRETS/console-session-key" ]; then
    mkdir -p -m 700 "$SECRETS"
    (umask 077; head -c32 /dev/urandom | base64 -w0 >"$SECRETS/console-session-key")
  fi
  start auth "$ROOT/bin/auth"
  wait_http "http://127.0.0.1:9101/healthz" 60 auth
  start ingest "$ROOT/bin/ingest"
  wait_http "http://127.0.0.1:9102/healthz" 30 ingest
  start analytics "$ROOT/bin/analytics"
  wait_http "http://127.0.0.1:9104/healthz" 30 analytics
  local i
  for ((i = 1; i < WRITERS; i++)); do
    start "analytics-writer-$i" "$ROOT/bin/analytics"
    wait_http "http://127.0.0.1:$((9104 + 10 * i))/healthz" 30 "analytics-writer-$i"
  done
  start campaigns "$ROOT/bin/campaigns"
  wait_http "http://127.0.0.1:9103/healthz" 30 campaigns
  # The providers' credentials shared by the stand-ins and delivery, and the key tracked links
  # are signed with: made once.
  local f
  for f in sendgrid-api-key twilio-auth-token tracking-key; do
    if [ ! -s "$SECRETS/$f" ]; then
      mkdir -p -m 700 "$SECRETS"
      (umask 077; head -c32 /dev/urandom | base64 -w0 >"$SECRETS/$f")
    fi
  done
  # The Stripe credentials shared by the stand-in and billing, shaped like Stripe's: a test-mode
  # secret key and a webhook signing secret, random, made once.
  if [ ! -s "$SECRETS/stripe-api-key" ]; then
    mkdir -p -m 700 "$SECRETS"
    (umask 077; printf 'sk_test_%s' "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >"$SECRETS/stripe-api-key")
  fi
  if [ ! -s "$SECRETS/stripe-webhook-secret" ]; then
    mkdir -p -m 700 "$SECRETS"
    (umask 077; printf 'whsec_%s' "$(head -c32 /dev/urandom | base64 -w0)" >"$SECRETS/stripe-webhook-secret")
  fi
  start standin "$ROOT/bin/standin" -sendgrid-api-key-file "$SECRETS/sendgrid-api-key" \
    -sendgrid-signing-key-file "$SECRETS/standin-sendgrid-signing-key.pem" \
    -sendgrid-public-key-out "$SECRETS/sendgrid-webhook-public-key" \
    -sendgrid-webhook-url "https://localhost:${GATEWAY_ADDR##*:}/webhooks/sendgrid" \
    -twilio-account-sid "$DEV_TWILIO_ACCOUNT" -twilio-auth-token-file "$SECRETS/twilio-auth-token" \
    -stripe-addr 127.0.0.1:8793 -stripe-api-key-file "$SECRETS/stripe-api-key" \
    -stripe-webhook-secret-file "$SECRETS/stripe-webhook-secret" \
    -stripe-webhook-url "https://localhost:${GATEWAY_ADDR##*:}/webhooks/stripe" \
    -webhook-ca-file "$CERTS/ca.pem"
  wait_http "http://127.0.0.1:8791/outbox?limit=0" 30 standin
  start delivery "$ROOT/bin/delivery"
  wait_http "http://127.0.0.1:9106/healthz" 30 delivery
  start dsr "$ROOT/bin/dsr"
  wait_http "http://127.0.0.1:9105/healthz" 30 dsr
  start billing "$ROOT/bin/billing"
  wait_http "http://127.0.0.1:9107/healthz" 30 billing
  start gateway "$ROOT/bin/gateway"
  wait_http "https://localhost:${GATEWAY_ADDR##*:}/healthz" 30 gateway

  cat <<MSG

CampaignMesh is up.
  web console            https://localhost:${GATEWAY_ADDR##*:}/console/   (sign in with .state/bootstrap/admin.json)
  gateway (REST + gRPC)  https://localhost:${GATEWAY_ADDR##*:}   (dev CA: .state/certs/ca.pem)
  OpenAPI                https://localhost:${GATEWAY_ADDR##*:}/openapi.json
  services (mTLS)        auth 7101, ingest 7102, campaigns 7103, analytics 7104, dsr 7105, delivery 7106,
                         billing 7107 (admin /healthz, /metrics: http://127.0.0.1:91xx)
  provider stand-ins     email outbox http://127.0.0.1:8791/outbox, SMS outbox http://127.0.0.1:8792/outbox,
                         Stripe meter events http://127.0.0.1:8793/outbox
  first credentials      .state/bootstrap/admin.json      tenant "acme" admin
                         .state/bootstrap/operator.json   platform operator
  logs                   .state/logs/<service>.log
  clickhouse shards      ${INFRA_CM_CLICKHOUSE_SHARDS:-${INFRA_CM_CLICKHOUSE_ADDR:-}}   ($WRITERS writer process(es))

Try, in another terminal:
  bin/cmesh login -f .state/bootstrap/admin.json && bin/cmesh whoami
  bin/cmesh dsr list && bin/cmesh privacy policy get    (data-subject requests, privacy policy)
  bin/cmesh usage get && bin/cmesh plan get           (today's usage, the tenant's plan)
  curl --cacert .state/certs/ca.pem https://localhost:${GATEWAY_ADDR##*:}/v1/auth/login -d @.state/bootstrap/admin.json

Ctrl-C (or make stop) stops everything.
MSG
  # Stay in the foreground until a service exits or we are interrupted.
  local -a all; mapfile -t all < <(run_services)
  all_alive() { for s in "${all[@]}"; do alive "$s" || return 1; done; }
  while all_alive; do sleep 1; done
  stopped=0
  for s in "${all[@]}"; do [ -f "$RUN/$s.pid" ] || stopped=1; done
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
  stop) [ -f "$STATE/env" ] && load_infra; stop_services ;;
  env) [ -n "${2:-}" ] || { echo "usage: $0 env SERVICE (${SERVICES[*]})" >&2; exit 2; }; print_env "$2" ;;
  *) echo "usage: $0 up|stop|env SERVICE" >&2; exit 2 ;;
esac
