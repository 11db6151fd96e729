"""What the API's views depend on (settings, sessions, dispatcher, waiter, clock), built once per app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from overlay.config import Settings
from overlay.errors import StorageUnavailable
from overlay.store.session import postgres_clock
from web.dispatch import Dispatcher
from web.waiter import JobWaiter


@dataclass
class ApiDeps:
    """The app's outside world, passed in so tests can hand it fakes or a fixed clock.

    ``clock`` gives the time of stored writes; by default none, so that every
    timestamp is Postgres's clock (the one clock liveness and latencies compare).
    """

    settings: Settings
    sessions: sessionmaker[Session]
    dispatcher: Dispatcher
    waiter: JobWaiter
    clock: Callable[[], datetime | None] = postgres_clock

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction, committed on success; StorageUnavailable if Postgres is down."""
        try:
            with self.sessions.begin() as session:
                yield session
        except OperationalError as e:
            raise StorageUnavailable(f"Postgres did not answer: {e.orig}") from e


def deps() -> ApiDeps:
    return current_app.extensions["overlay"]  # type: ignore[no-any-return]
