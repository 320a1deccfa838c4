#!/usr/bin/env bash
# compose-secrets.sh - generate once the passwords of the compose stack's PostgreSQL roles, NATS
# and ClickHouse users, auth's key-encryption key and the mesh's privacy key, into deploy/secrets/ (not in git); deploy/compose.yaml hands each container only its own.
# Compose bind-mounts file secrets with their host mode and the services run as uid 65532, so
# the files are 644 inside a 700 directory: no other host user can reach them. Existing files
# are kept.
set -euo pipefail
DIR="$(cd "$(dirname "$0")/.." && pwd)/deploy/secrets"
mkdir -p "$DIR"; chmod 700 "$DIR"
for n in nats-admin nats-ingest nats-analytics nats-gateway nats-dsr nats-delivery nats-billing clickhouse-admin clickhouse-writer clickhouse-reader \
  postgres-admin postgres-auth postgres-campaigns postgres-dsr postgres-delivery postgres-billing; do
  [ -s "$DIR/$n" ] && continue
  (umask 022; od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$DIR/$n")
  echo "compose-secrets: wrote deploy/secrets/$n"
done
# The services read their database password from a pgpass file named in their URL.
for r in auth campaigns dsr delivery billing; do
  (umask 022; printf '*:*:*:%s:%s\n' "$r" "$(cat "$DIR/postgres-$r")" >"$DIR/pgpass-$r")
done
# dsr's key-encryption key (its receipt signing keys at rest), made like auth's.
if [ ! -s "$DIR/dsr-kek" ]; then
  (umask 022; printf 'compose1:%s\n' "$(head -c32 /dev/urandom | base64 -w0)" >"$DIR/dsr-kek")
  echo "compose-secrets: wrote deploy/secrets/dsr-kek"
fi
if [ ! -s "$DIR/auth-kek" ]; then
  (umask 022; printf 'compose1:%s\n' "$(head -c32 /dev/urandom | base64 -w0)" >"$DIR/auth-kek")
  echo "compose-secrets: wrote deploy/secrets/auth-kek"
fi
# The providers' credentials delivery and the dev stand-ins share, and the key delivery signs
# tracked links with (base64 of 32 random bytes).
for n in sendgrid-api-key twilio-auth-token tracking-key; do
  [ -s "$DIR/$n" ] && continue
  (umask 022; head -c32 /dev/urandom | base64 -w0 >"$DIR/$n")
  echo "compose-secrets: wrote deploy/secrets/$n"
done
# The Stripe credentials billing and the dev Stripe stand-in share: a test-mode secret key
# (sk_test_…) and a webhook signing secret (whsec_…), random, made once.
if [ ! -s "$DIR/stripe-api-key" ]; then
  (umask 022; printf 'sk_test_%s' "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >"$DIR/stripe-api-key")
  echo "compose-secrets: wrote deploy/secrets/stripe-api-key"
fi
if [ ! -s "$DIR/stripe-webhook-secret" ]; then
  (umask 022; printf 'whsec_%s' "$(head -c32 /dev/urandom | base64 -w0)" >"$DIR/stripe-webhook-secret")
  echo "compose-secrets: wrote deploy/secrets/stripe-webhook-secret"
fi
# The privacy key of dsr, ingest and analytics: base64 of 32 random bytes. Never regenerated:
# the suppression lists' hashes are keyed with it.
if [ ! -s "$DIR/privacy-key" ]; then
  (umask 022; head -c32 /dev/urandom | base64 -w0 >"$DIR/privacy-key")
  echo "compose-secrets: wrote deploy/secrets/privacy-key"
fi
