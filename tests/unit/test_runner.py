"""The fake executor (EXECUTOR=fake) and a log's tail. The real job runs under its supervisor:
tests/integration/test_supervisor_process.py (exit codes, timeout, cancel, leftovers)."""

from __future__ import annotations

import time

from workers.runner import fake_run, tail


def never() -> None:
    return None


def test_the_fake_executor_sleeps_for_the_declared_duration_and_runs_nothing(tmp_path):
    started = time.monotonic()
    outcome = fake_run(["sleep", "0.3"], log_path=tmp_path / "j.log", should_stop=never)
    assert outcome.exit_code == 0 and 0.25 < time.monotonic() - started < 2
    assert "fake executor" in tail(tmp_path / "j.log")


def test_the_fake_executor_stops_when_asked(tmp_path):
    reasons = iter([None, "job is CANCELLED"])
    outcome = fake_run(["sleep", "30"], log_path=tmp_path / "j.log", should_stop=lambda: next(reasons))
    assert outcome.cancelled and outcome.reason == "job is CANCELLED"


def test_the_tail_of_a_missing_log_is_empty(tmp_path):
    assert tail(tmp_path / "none.log") == ""
