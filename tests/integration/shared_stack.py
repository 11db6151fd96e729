"""One real stack for a whole test module: API, scheduler, beat, node-a and node-b.

Starting the processes takes seconds, so modules whose tests only read or add jobs
share one. Tests in such a module must not use the ``sessions`` or ``redis_url``
fixtures: their teardown empties the tables and flushes the broker under the
running processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

from overlay.store.tables import Base
from tests.conftest import TEST_REDIS_URL
from tests.integration.stack import Stack


def shared_stack(database_url: str, workdir: Path, **env: str) -> Iterator[Stack]:
    """Yield a running stack (``env`` added to its processes'); afterwards stop it and leave
    the database and broker empty."""
    broker = redis.Redis.from_url(TEST_REDIS_URL)
    broker.flushdb()
    # A loaded test machine can delay a heartbeat past the usual 4 s; these tests are not about that.
    stack = Stack(database_url=database_url, redis_url=TEST_REDIS_URL, workdir=workdir,
                  **{"NODE_TTL_S": "30", **env})
    failed = True
    try:
        stack.start_api()
        stack.start_scheduler()
        stack.start_agent("node-a", labels="zone=a")
        stack.start_agent("node-b", labels="zone=b")
        stack.start_beat()
        failed = False
        yield stack
    finally:
        stack.stop_all()
        if failed:
            print(stack.all_output())
        empty_tables(database_url)
        broker.flushdb()
        broker.close()


def empty_tables(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"truncate {', '.join(t.name for t in Base.metadata.sorted_tables)} cascade"))
    finally:
        engine.dispose()
