"""What the API's views depend on, built once per app and passed in through the app."""

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
class Services:
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


def services() -> Services:
    return current_app.extensions["overlay"]  # type: ignore[no-any-return]
