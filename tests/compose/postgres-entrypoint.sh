#!/bin/sh
# Stand-in for the postgres image's entrypoint (tests/compose/standins.py): on an empty
# PGDATA, makes a cluster whose superuser is POSTGRES_USER with POSTGRES_PASSWORD and a
# database POSTGRES_DB; local socket connections are trusted, TCP ones need the password
# (as in the real image). Then runs the command as the postgres user.
set -eu
if [ "${1:-}" = postgres ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    init=$(mktemp -d); chown postgres "$init"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$init/pw"; chown postgres "$init/pw"
    as_postgres initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$init/pw" \
      --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    # On a socket of its own while it is made, so the healthcheck waits for the real start
    as_postgres pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=$init" start >/dev/null
    [ "$POSTGRES_DB" = postgres ] || as_postgres createdb -h "$init" -U "$POSTGRES_USER" "$POSTGRES_DB"
    as_postgres pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
    rm -rf "$init"
    echo "stand-in postgres: made $POSTGRES_DB for $POSTGRES_USER in $PGDATA"
  fi
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"
fi
exec "$@"
