#!/usr/bin/env bash
# Makes sure the local Postgres and Redis answer on 127.0.0.1: starts them if they are
# installed but stopped, installs them from the system's packages if absent (Debian/Ubuntu).
# Used by `make dev` and by .ci/run.
set -euo pipefail

say() { echo "local-services: $*"; }
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

apt_install() {
  command -v apt-get >/dev/null || { say "cannot install $*: no apt-get; install it yourself"; exit 1; }
  say "installing $* from the system's packages"
  sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq "$@" >/dev/null
}

wait_for() {
  local what=$1 check=$2
  for _ in $(seq 1 30); do "$check" && { say "$what answers"; return 0; }; sleep 1; done
  say "$what did not come up"; return 1
}

start_postgres() {
  command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-client
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  sudo_ pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || sudo_ pg_ctlcluster "$version" main start
}

# overlay's defaults connect as user postgres over 127.0.0.1 with no password in the URL
# (DATABASE_URL, TEST_PG_URL). The host's pg_hba.conf is its own and is left as it is:
# where it asks for a password, the postgres role gets one (only if it has none) and the
# password goes to your ~/.pgpass, where libpq finds it.
pg_login() { psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -w -tAc 'select 1' >/dev/null 2>&1; }
as_postgres() { (cd / && if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi); }

ensure_login() {
  pg_login && return 0
  local pgpass=${PGPASSFILE:-$HOME/.pgpass} has_password password
  has_password=$(as_postgres psql -tAc "select rolpassword is not null from pg_authid where rolname = 'postgres'")
  if [ "$has_password" = t ]; then
    say "Postgres wants user postgres's password on 127.0.0.1: add '127.0.0.1:5432:*:postgres:<password>' to $pgpass"
    say "(or set DATABASE_URL and TEST_PG_URL to a user of your own); its pg_hba.conf is left as it is"
    return 1
  fi
  password=$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  printf "alter role postgres password '%s';\n" "$password" | as_postgres psql -q
  (umask 077; printf '127.0.0.1:5432:*:postgres:%s\nlocalhost:5432:*:postgres:%s\n' "$password" "$password" >> "$pgpass")
  say "Postgres asks for a password on 127.0.0.1: gave user postgres a random one, kept in $pgpass (pg_hba.conf untouched)"
  pg_login
}

start_redis() {
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p /tmp/overlay-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/overlay-redis --logfile /tmp/overlay-redis/redis.log
}

if pg_up; then say "Postgres answers"; else
  command -v pg_isready >/dev/null || apt_install postgresql postgresql-client
  pg_up || { say "starting Postgres"; start_postgres; wait_for Postgres pg_up; }
fi
ensure_login || { say "cannot log in to Postgres as user postgres on 127.0.0.1"; exit 1; }
if redis_up; then say "Redis answers"; else
  command -v redis-cli >/dev/null || apt_install redis-server
  redis_up || { say "starting Redis"; start_redis; wait_for Redis redis_up; }
fi
