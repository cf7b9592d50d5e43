#!/usr/bin/env bash
# Install and start a throwaway PostgreSQL server on 127.0.0.1 for `rlbench tune --storage`
# and the `postgres` tests, then print its URL. Idempotent: rerunning reuses the server,
# data directory, role and database when they exist.
#
#   eval "$(scripts/postgres.sh --export)"   # sets RLBENCH_TEST_POSTGRES_URL
#   python -m pytest -m postgres tests/test_tune.py
#
# Settings (environment): RLBENCH_PG_DIR (data directory, default /tmp/rlbench-postgres),
# RLBENCH_PG_PORT (default 55432), RLBENCH_PG_DB / RLBENCH_PG_USER / RLBENCH_PG_PASSWORD
# (default rlbench). Stop it: pg_ctl -D "$RLBENCH_PG_DIR/data" stop (as the server's user).
set -euo pipefail

DIR="${RLBENCH_PG_DIR:-/tmp/rlbench-postgres}"
PORT="${RLBENCH_PG_PORT:-55432}"
DB="${RLBENCH_PG_DB:-rlbench}"
USER_NAME="${RLBENCH_PG_USER:-rlbench}"
PASSWORD="${RLBENCH_PG_PASSWORD:-rlbench}"
DATA="$DIR/data"

log() { echo "postgres.sh: $*" >&2; }

find_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

BIN="$(find_bin || true)"
if [[ -z "$BIN" && -z "$(command -v pg_ctl || true)" ]]; then
    if [[ "$(id -u)" -ne 0 ]]; then
        log "PostgreSQL is not installed; run as root (or: sudo apt-get install -y postgresql)"
        exit 1
    fi
    log "installing PostgreSQL (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    BIN="$(find_bin)"
fi
BIN="${BIN:-$(dirname "$(command -v pg_ctl)")}"

# The server refuses to run as root: run it as the `postgres` system user when root.
if [[ "$(id -u)" -eq 0 ]]; then
    RUN_AS=(runuser -u postgres --)
    OWNER=postgres
else
    RUN_AS=()
    OWNER="$(id -un)"
fi
as_server() { "${RUN_AS[@]}" "$@"; }

mkdir -p "$DIR"
chown "$OWNER" "$DIR"
if [[ ! -s "$DATA/PG_VERSION" ]]; then
    log "initializing $DATA"
    as_server "$BIN/initdb" -D "$DATA" -A trust -U postgres --encoding=UTF8 >&2
fi

if ! as_server "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    log "starting the server on 127.0.0.1:$PORT"
    as_server "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=200" start >&2
fi

psql_admin() { as_server "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [[ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$USER_NAME'")" != "1" ]]; then
    psql_admin -c "CREATE ROLE \"$USER_NAME\" LOGIN PASSWORD '$PASSWORD'" >&2
fi
if [[ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != "1" ]]; then
    psql_admin -c "CREATE DATABASE \"$DB\" OWNER \"$USER_NAME\"" >&2
fi

URL="postgresql+psycopg2://$USER_NAME:$PASSWORD@127.0.0.1:$PORT/$DB"
if [[ "${1:-}" == "--export" ]]; then
    echo "export RLBENCH_TEST_POSTGRES_URL='$URL'"
else
    echo "$URL"
fi
