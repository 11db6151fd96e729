"""Wakes requests that wait on a job, fed by the store's job-end listener (one per process)."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from overlay.errors import StorageUnavailable, TooManyWaiters
from overlay.store.notifications import JobEndListener

# How long a new watcher waits for the listening connection (first request of a process).
LISTEN_WAIT_S = 2.0
# What a long-poll refused for want of a slot is told to wait before asking again.
RETRY_AFTER_S = 1

log = logging.getLogger(__name__)


class JobWaiter:
    """``with waiter.watch(job_id) as ended: ... ended.wait(timeout)``.

    A background thread LISTENs for job events and sets the Event of every request
    watching a job that has just ended. While Postgres is away it sets them all every second, so
    waiters re-read rather than hang.

    Each waiting request holds one of gunicorn's threads. At most ``max_waiters`` wait at
    once (the threads left after those kept for submits and every other request): one more
    is refused with TooManyWaiters (429 with Retry-After), so waiters never take the
    threads a submit needs.
    """

    def __init__(self, database_url: str, *, max_waiters: int | None = None) -> None:
        self.database_url = database_url
        self.max_waiters = max_waiters
        self.waiting = 0
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
        (unless Postgres is away: then the caller's re-reads are what is left).

        Raises TooManyWaiters when ``max_waiters`` requests wait already.
        """
        event = threading.Event()
        with self.lock:
            if self.max_waiters is not None and self.waiting >= self.max_waiters:
                raise TooManyWaiters(limit=self.max_waiters, retry_after_s=RETRY_AFTER_S)
            self.waiting += 1
            self.watchers[job_id].add(event)
        try:
            self._ensure_listening()
            self.listening.wait(LISTEN_WAIT_S)
            yield event
        finally:
            with self.lock:
                self.waiting -= 1
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
            except StorageUnavailable as e:
                log.warning("job waiter: %s; retrying", e.message)
            self._wake(None)
            self.closing.wait(1)

    def _listen(self) -> None:
        with JobEndListener(self.database_url) as ends:
            self.listening.set()
            try:
                while not self.closing.is_set():
                    for job_id in ends.wait(1.0):
                        self._wake(job_id)
            finally:
                self.listening.clear()
