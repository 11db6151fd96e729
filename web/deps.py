"""What the API's views depend on (settings, sessions, dispatcher, waiter, clock), built once per app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from overlay.config import Settings
from overlay.errors import StorageUnavailable
from web.dispatch import Dispatcher
from web.waiter import JobWaiter


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ApiDeps:
    """The app's outside world, passed in so tests can hand it fakes or a fixed clock."""

    settings: Settings
    sessions: sessionmaker[Session]
    dispatcher: Dispatcher
    waiter: JobWaiter
    clock: Callable[[], datetime] = utcnow

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
