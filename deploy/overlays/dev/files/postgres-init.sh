#!/bin/bash
# Runs once, when the postgres container initialises an empty data volume
# (/docker-entrypoint-initdb.d), as the admin POSTGRES_USER. One database per service
# (design.md section 2), each owned by a role of that service with its own password (from the
# container's secrets) and closed to every other role. Each service creates its own tables.
set -euo pipefail
for db in auth campaigns dsr delivery billing; do
  pw=$(cat "/run/secrets/postgres-$db")
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE ROLE $db LOGIN NOCREATEDB NOCREATEROLE PASSWORD '$pw';
CREATE DATABASE $db OWNER $db;
REVOKE ALL ON DATABASE $db FROM PUBLIC;
SQL
done
