#!/bin/sh
# MLflow tracking server: PostgreSQL backend store, artifacts proxied to MLFLOW_ARTIFACTS_DESTINATION
# (s3://mlflow), login required (basic-auth app). The auth config is written here from the
# environment so that no password sits in a file of the repository.
set -eu

: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI (postgresql+psycopg2://...)}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION (s3://mlflow)}"
: "${MLFLOW_AUTH_ADMIN_USERNAME:?set MLFLOW_AUTH_ADMIN_USERNAME in .env}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD in .env}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY in .env}"

config_dir="$(mktemp -d)"
export MLFLOW_AUTH_CONFIG_PATH="$config_dir/basic_auth.ini"
# users live in the same database as the runs (own tables and migration history);
# '%' is doubled for configparser
auth_db_uri="$(printf '%s' "$MLFLOW_BACKEND_STORE_URI" | sed 's/%/%%/g')"
(
    umask 077
    cat > "$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${auth_db_uri}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
)

exec mlflow server \
    --host 0.0.0.0 \
    --port "${MLFLOW_PORT:-5000}" \
    --workers "${MLFLOW_WORKERS:-2}" \
    --serve-artifacts \
    --app-name basic-auth \
    --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:5000,localhost,localhost:*,127.0.0.1,127.0.0.1:*}" \
    "$@"
