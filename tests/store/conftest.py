"""The store tier's fixtures (helpers in world.py): a cluster on the test database and
agent runtimes with the fake executor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from sqlalchemy.orm import Session, sessionmaker

from overlay.config import Settings
from tests.store.world import Cluster
from workers.runtime import Runtime


@pytest.fixture
def cluster(sessions: sessionmaker[Session]) -> Cluster:
    """An empty cluster on the test database (emptied again after the test)."""
    return Cluster(sessions)


@pytest.fixture
def agent_runtime(settings: Settings, sessions: sessionmaker[Session]) -> Callable[[str], Runtime]:
    """Build node ``name``'s agent runtime: EXECUTOR=fake (a job "runs" for the last number
    in its command, in seconds, and runs nothing) and the test's sessions."""

    def build(name: str) -> Runtime:
        rt = Runtime(replace(settings, node_name=name, executor="fake", gpu_metrics_mode="fake"))
        rt.sessions = sessions  # instead of an engine of its own
        return rt

    return build
