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
  # Trust local TCP connections from postgres, as the defaults (user postgres, no password) expect.
  local hba=/etc/postgresql/$version/main/pg_hba.conf
  if ! sudo_ grep -q "overlay-local" "$hba"; then
    printf '# overlay-local\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' \
      | sudo_ tee /tmp/overlay-hba >/dev/null
    sudo_ sh -c "cat '$hba' >> /tmp/overlay-hba && cp /tmp/overlay-hba '$hba'"
  fi
  sudo_ pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || sudo_ pg_ctlcluster "$version" main start
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
if redis_up; then say "Redis answers"; else
  command -v redis-cli >/dev/null || apt_install redis-server
  redis_up || { say "starting Redis"; start_redis; wait_for Redis redis_up; }
fi
