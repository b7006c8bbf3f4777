#!/bin/sh
# Airflow container entrypoint: writes the simple auth manager's password file from the
# environment (AIRFLOW_ADMIN_USERNAME / AIRFLOW_ADMIN_PASSWORD, from .env), then runs the command.
set -eu

if [ -n "${AIRFLOW_ADMIN_PASSWORD:-}" ]; then
    passwords_file="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-/opt/airflow/auth/passwords.json}"
    mkdir -p "$(dirname "$passwords_file")"
    (
        umask 077
        python - "$passwords_file" <<'PY'
import json
import os
import sys

user = os.environ.get("AIRFLOW_ADMIN_USERNAME", "admin")
with open(sys.argv[1], "w") as handle:
    json.dump({user: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, handle)
PY
    )
fi

exec "$@"
