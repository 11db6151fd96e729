"""Wakes requests that wait on a job, fed by Postgres LISTEN/NOTIFY (one connection per process)."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from select import select as wait_readable  # the syscall; no SQL here

import psycopg2
from sqlalchemy.engine import make_url

from overlay.states import JobState
from overlay.store.jobs import NOTIFY_CHANNEL

ENDED = {s.value for s in JobState if s.terminal}
# How long a new watcher waits for the listening connection (first request of a process).
LISTEN_WAIT_S = 2.0

log = logging.getLogger(__name__)


class JobWaiter:
    """``with waiter.watch(job_id) as ended: ... ended.wait(timeout)``.

    A background thread LISTENs for job events and sets the Event of every request
    watching a job that has just ended. While Postgres is away it sets them all every second, so
    waiters re-read rather than hang.
    """

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self.dsn = url.render_as_string(hide_password=False)
        self.watchers: dict[str, set[threading.Event]] = defaultdict(set)
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.closing = threading.Event()
        self.listening = threading.Event()  # set while LISTEN is in effect

    def close(self) -> None:
        """Stop listening (tests and shutdown); waiters fall back to their periodic re-reads."""
        self.closing.set()
        if self.thread is not None:
            self.thread.join(timeout=3)

    @contextmanager
    def watch(self, job_id: str) -> Iterator[threading.Event]:
        """Watch ``job_id``; on return, every end notified from now on sets the event
        (unless Postgres is away: then the caller's re-reads are what is left)."""
        self._ensure_listening()
        event = threading.Event()
        with self.lock:
            self.watchers[job_id].add(event)
        self.listening.wait(LISTEN_WAIT_S)
        try:
            yield event
        finally:
            with self.lock:
                self.watchers[job_id].discard(event)
                if not self.watchers[job_id]:
                    del self.watchers[job_id]

    def _ensure_listening(self) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._listen_forever, name="job-waiter", daemon=True)
                self.thread.start()

    def _wake(self, job_id: str | None) -> None:
        with self.lock:
            events = [e for s in self.watchers.values() for e in s] if job_id is None else \
                list(self.watchers.get(job_id, ()))
        for event in events:
            event.set()

    def _listen_forever(self) -> None:
        while not self.closing.is_set():
            try:
                self._listen()
            except psycopg2.Error as e:
                log.warning("job waiter lost Postgres (%s); retrying", str(e).strip())
            self._wake(None)
            self.closing.wait(1)

    def _listen(self) -> None:
        conn = psycopg2.connect(self.dsn, connect_timeout=3)
        try:
            conn.autocommit = True
            conn.cursor().execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.listening.set()
            idle = 0
            while not self.closing.is_set():
                if wait_readable([conn], [], [], 1.0) == ([], [], []):
                    idle += 1
                    if idle % 5 == 0:
                        conn.cursor().execute("select 1")  # notices a dead server
                    continue
                conn.poll()
                while conn.notifies:
                    job_id, _, state = conn.notifies.pop(0).payload.partition(" ")
                    if state in ENDED:  # waiters wait for the end: PLACED or RUNNING wakes no one
                        self._wake(job_id)
        finally:
            self.listening.clear()
            conn.close()
