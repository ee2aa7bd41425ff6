#!/usr/bin/env bash
# The postgres image runs this once, when its data volume is first initialised (it is mounted into
# /docker-entrypoint-initdb.d/). One server holds two databases: the Airflow metadata database
# (POSTGRES_DB, owned by the superuser POSTGRES_USER) and the warehouse the DAG loads into, owned by its own
# login so the loader cannot touch Airflow's tables. Changing WAREHOUSE_* later needs a fresh volume
# (`docker compose -f docker-compose.airflow.yml down -v`) or the same change made by hand.
set -euo pipefail

: "${WAREHOUSE_DB:?WAREHOUSE_DB is not set}"
: "${WAREHOUSE_USER:?WAREHOUSE_USER is not set}"
: "${WAREHOUSE_PASSWORD:?WAREHOUSE_PASSWORD is not set (run docker/make-env.sh)}"

# Values travel as psql variables and are quoted by psql (:"ident", :'literal'), never pasted into SQL.
# The loader creates its schema and tables itself, so owning the database is all the rights it needs.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v metadata_db="$POSTGRES_DB" \
    -v wh_db="$WAREHOUSE_DB" \
    -v wh_user="$WAREHOUSE_USER" \
    -v wh_password="$WAREHOUSE_PASSWORD" <<'SQL'
CREATE ROLE :"wh_user" LOGIN PASSWORD :'wh_password';
CREATE DATABASE :"wh_db" OWNER :"wh_user";
REVOKE ALL ON DATABASE :"wh_db" FROM PUBLIC;
REVOKE ALL ON DATABASE :"metadata_db" FROM PUBLIC;
SQL
echo "postgres-init: created database ${WAREHOUSE_DB} owned by ${WAREHOUSE_USER}"
