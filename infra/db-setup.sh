#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432 and that the hub's database exists.
# Migrations are applied by the hub itself at start.
source "$(dirname "$0")/lib.sh"
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  say "PostgreSQL is not answering on 127.0.0.1:5432; trying to start the local cluster"
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.2; done
  pg_isready -h 127.0.0.1 -p 5432 -q || { say "PostgreSQL is not running: start it, then run this again"; exit 1; }
fi
if ! psql "$PG_URL_BASE/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE_NAME'" | grep -q 1; then
  psql "$PG_URL_BASE/postgres" -qc "CREATE DATABASE \"$DATABASE_NAME\""
  say "database $DATABASE_NAME created"
fi
