#!/bin/sh
# Stand-in for the redis image's entrypoint (tests/compose/standins.py): `redis-server ...`
# runs as the redis user in /data, as in the real image; anything else runs as given.
set -eu
if [ "${1:-}" = redis-server ]; then
  mkdir -p /data && chown redis:redis /data && cd /data
  exec setpriv --reuid=redis --regid=redis --init-groups "$@"
fi
exec "$@"
