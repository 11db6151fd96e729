from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.stack import Stack


@pytest.fixture
def stack(request, database_url, redis_url, sessions, tmp_path) -> Iterator[Stack]:
    """Real processes against the test database; their output is shown if the test fails."""
    s = Stack(database_url=database_url, redis_url=redis_url, workdir=tmp_path)
    yield s
    s.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(s.all_output())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
