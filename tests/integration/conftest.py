"""Fixtures only: the helpers are in harness.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.harness import ZONES, Stack

# The fixtures whose Stack's output a failing test prints, the bare stack first.
STACK_FIXTURES = ("stack", "two_nodes", "cluster")


@pytest.fixture
def stack(database_url, redis_url, sessions, tmp_path) -> Iterator[Stack]:
    """Real processes against the test database, none started yet."""
    s = Stack(database_url=database_url, redis_url=redis_url, workdir=tmp_path)
    yield s
    s.stop_all()


@pytest.fixture
def two_nodes(stack: Stack) -> Stack:
    """API, scheduler, beat, node-a (4×A100, zone=a) and node-b (2×H100, zone=b)."""
    stack.start_cluster(labels=ZONES)
    return stack


@pytest.fixture(autouse=True)
def output_on_failure(request) -> Iterator[None]:
    """When a test fails, or a fixture starting its processes does, print the output of the
    Stack it used."""
    # Taken before the test: after it, a function-scoped stack may already be torn down.
    used: dict[int, Stack] = {}
    for name in (n for n in STACK_FIXTURES if n in request.fixturenames):
        try:
            value = request.getfixturevalue(name)
        except BaseException:
            for s in used.values():  # e.g. two_nodes failed to start on stack
                print(s.all_output())
            raise
        if isinstance(value, Stack):
            used[id(value)] = value
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for s in used.values():
            print(s.all_output())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
