#!/bin/bash
# First start of the compose `postgres` service (an empty data volume) only: two roles and two
# databases, Dagster's storage and the Heliox database, each owned by its own role.
# Passwords come from the container environment (docker-compose.yml), never from this file.
set -euo pipefail

: "${DAGSTER_POSTGRES_PASSWORD:?set DAGSTER_POSTGRES_PASSWORD}"
: "${HELIOX_POSTGRES_PASSWORD:?set HELIOX_POSTGRES_PASSWORD}"

psql --set=ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  --set=dagster_password="$DAGSTER_POSTGRES_PASSWORD" \
  --set=heliox_password="$HELIOX_POSTGRES_PASSWORD" <<'SQL'
CREATE ROLE dagster LOGIN PASSWORD :'dagster_password';
CREATE DATABASE dagster OWNER dagster;
REVOKE ALL ON DATABASE dagster FROM PUBLIC;

CREATE ROLE heliox LOGIN PASSWORD :'heliox_password';
CREATE DATABASE heliox OWNER heliox;
REVOKE ALL ON DATABASE heliox FROM PUBLIC;
SQL
