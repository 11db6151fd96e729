from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from overlay.config import Settings
from overlay.store.tables import JobEventRow, JobRow
from web.app import create_app
from web.deps import ApiDeps
from web.dispatch import Dispatcher
from web.waiter import JobWaiter


@pytest.fixture
def app(settings: Settings, sessions) -> Iterator[Flask]:
    deps = ApiDeps(settings=settings, sessions=sessions, dispatcher=Dispatcher(settings.redis_url),
                        waiter=JobWaiter(settings.database_url))
    yield create_app(settings, deps=deps)
    deps.waiter.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def count_rows(sessions):
    """How many jobs and job events the database holds."""

    def count() -> tuple[int, int]:
        with sessions() as s:
            return (
                s.scalar(select(func.count()).select_from(JobRow)),
                s.scalar(select(func.count()).select_from(JobEventRow)),
            )

    return count
