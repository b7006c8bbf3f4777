#!/usr/bin/env bash
# One database per component, each owned by its own login role: run by the postgres container on
# its first start (mounted into /docker-entrypoint-initdb.d/), and by the one-shot service
# postgres-databases at every start of the stack (PGHOST set), so a database added later is
# created on an existing volume too. Names and passwords come from the environment
# (.env); passwords are read by psql itself (\getenv), never placed on a command line.
# Safe to run twice: existing roles and databases are kept.
set -euo pipefail

create_database() {
    local prefix="$1"
    local db_var="${prefix}_DB_NAME" user_var="${prefix}_DB_USER" password_var="${prefix}_DB_PASSWORD"
    : "${!db_var:?set ${db_var}}" "${!user_var:?set ${user_var}}" "${!password_var:?set ${password_var}}"
    echo "init-databases: database ${!db_var} owned by ${!user_var}"
    psql --no-psqlrc --set ON_ERROR_STOP=1 --quiet \
        --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
        --set db_var="$db_var" --set user_var="$user_var" --set password_var="$password_var" <<'SQL'
\getenv db_name :db_var
\getenv db_user :user_var
\getenv db_password :password_var
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'db_user', :'db_password')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'db_user') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db_name', :'db_user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db_name') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db_name') \gexec
SELECT format('GRANT ALL PRIVILEGES ON DATABASE %I TO %I', :'db_name', :'db_user') \gexec
SQL
}

# A login that may connect to the prediction log's database and nothing more: the monitoring
# summaries there are readable by any role that can connect (their migration grants SELECT to
# PUBLIC); the patient-level log stays its owner's alone.
create_reader() {
    : "${GRAFANA_DB_USER:?set GRAFANA_DB_USER}" "${GRAFANA_DB_PASSWORD:?set GRAFANA_DB_PASSWORD}"
    echo "init-databases: read-only login ${GRAFANA_DB_USER} on ${PREDICTION_LOG_DB_NAME}"
    psql --no-psqlrc --set ON_ERROR_STOP=1 --quiet \
        --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" <<'SQL'
\getenv db_name PREDICTION_LOG_DB_NAME
\getenv db_user GRAFANA_DB_USER
\getenv db_password GRAFANA_DB_PASSWORD
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'db_user', :'db_password')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'db_user') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db_name', :'db_user') \gexec
SQL
}

create_database AIRFLOW
create_database MLFLOW
create_database PREDICTION_LOG
create_reader
