"""Bootstraps storage before the API serves: database, migrations, broker ping.

``python -m web.bootstrap`` runs it alone (``make migrate``); gunicorn runs it once
in its master through deploy/gunicorn.conf.py.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import redis

from overlay.config import Settings
from overlay.errors import StorageUnavailable
from overlay.store.session import ensure_database, migrate

log = logging.getLogger("overlay.bootstrap")


def bootstrap_storage(settings: Settings, *, wait_s: float = 60.0) -> bool:
    """Create the database if missing, migrate it, ping Redis; True if all is OK.

    Waits up to ``wait_s`` for Postgres (containers start in any order), then
    raises StorageUnavailable. A silent Redis is logged, not fatal: jobs are
    stored and the reconcile loop dispatches them once it answers.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            ensure_database(settings.database_url)
            break
        except StorageUnavailable as e:
            if time.monotonic() >= deadline:
                log.error("Bootstrapping storage FAILED: %s", e.message)
                raise
            log.info("waiting for Postgres: %s", e.message)
            time.sleep(1)
    migrate(settings.database_url)
    try:
        redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2).ping()
    except redis.RedisError as e:
        log.error("Bootstrapping storage: Postgres OK, Redis at %s FAILED: %s", settings.redis_url, e)
        return False
    log.info("Bootstrapping storage OK (Postgres migrated, Redis answers)")
    return True


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        bootstrap_storage(Settings.from_env(os.environ))
    except StorageUnavailable:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
