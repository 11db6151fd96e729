"""Job events pushed by Postgres: a LISTEN connection on the channel ``store.jobs`` notifies."""

from __future__ import annotations

from select import select as wait_readable  # the syscall
from types import TracebackType

import psycopg2
from sqlalchemy.engine import make_url

from overlay.errors import StorageUnavailable
from overlay.states import JobState
from overlay.store.jobs import NOTIFY_CHANNEL

ENDED = {s.value for s in JobState if s.terminal}
# Quiet waits between pings that notice a server gone without a word.
PING_EVERY = 5


class JobEndListener:
    """``with JobEndListener(url) as ends: ends.wait(1.0)`` -> ids of jobs that ended meanwhile.

    Raises StorageUnavailable when Postgres cannot be reached or the connection breaks.
    """

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self.dsn = url.render_as_string(hide_password=False)
        self.conn: psycopg2.extensions.connection | None = None
        self.quiet = 0

    def __enter__(self) -> JobEndListener:
        try:
            self.conn = psycopg2.connect(self.dsn, connect_timeout=3)
            self.conn.autocommit = True
            self.conn.cursor().execute(f"LISTEN {NOTIFY_CHANNEL}")
        except psycopg2.Error as e:
            self.__exit__(None, None, None)
            raise StorageUnavailable(f"cannot listen for job events: {str(e).strip()}") from e
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def wait(self, timeout_s: float) -> list[str]:
        """The ids of jobs that reached a terminal state, waiting up to ``timeout_s`` for one."""
        assert self.conn is not None, "use JobEndListener in a with block"
        try:
            if wait_readable([self.conn], [], [], timeout_s) == ([], [], []):
                self.quiet += 1
                if self.quiet % PING_EVERY == 0:
                    self.conn.cursor().execute("select 1")
                return []
            self.conn.poll()
            ended = []
            while self.conn.notifies:
                job_id, _, state = self.conn.notifies.pop(0).payload.partition(" ")
                if state in ENDED:  # waiters wait for the end: PLACED or RUNNING wakes no one
                    ended.append(job_id)
            return ended
        except psycopg2.Error as e:
            raise StorageUnavailable(f"lost the job events connection: {str(e).strip()}") from e
