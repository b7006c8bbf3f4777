#!/usr/bin/env bash
# Entrypoint of the PostgreSQL stand-in (tests only): what the official image's entrypoint does
# that the compose file relies on. On the first start (empty PGDATA): a cluster whose superuser
# is POSTGRES_USER with POSTGRES_PASSWORD, the database POSTGRES_DB, then the scripts of
# /docker-entrypoint-initdb.d (*.sh run if executable, else sourced; *.sql through psql) against
# a server reachable only by its Unix socket. Then the command, as the postgres user.
set -euo pipefail

if [[ $(id -u) == 0 ]]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [[ $1 == postgres && ! -s $PGDATA/PG_VERSION ]]; then
    : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
    export POSTGRES_USER="${POSTGRES_USER:-postgres}"
    export POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl --wait --silent --options "-c listen_addresses=''" start
    if [[ $POSTGRES_DB != postgres ]]; then
        createdb --username="$POSTGRES_USER" "$POSTGRES_DB"
    fi
    for script in /docker-entrypoint-initdb.d/*; do
        case $script in
            *.sh) if [[ -x $script ]]; then "$script"; else
                # shellcheck disable=SC1090
                . "$script"; fi ;;
            *.sql) psql --username="$POSTGRES_USER" --dbname="$POSTGRES_DB" --set ON_ERROR_STOP=1 --file "$script" ;;
        esac
    done
    pg_ctl --wait --silent --mode fast stop
fi

exec "$@"
