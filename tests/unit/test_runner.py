"""The job runner: exit codes, timeouts and stops kill the whole process group."""

from __future__ import annotations

import os
import time

from workers.runner import fake_run, run, tail


def never() -> None:
    return None


def test_exit_zero_is_a_clean_outcome_and_output_goes_to_the_log(tmp_path):
    log = tmp_path / "j.log"
    outcome = run(["sh", "-c", "echo out; echo err >&2"], {"PATH": "/usr/bin:/bin"},
                  log_path=log, timeout_s=None, should_stop=never)
    assert (outcome.exit_code, outcome.reason) == (0, None)
    assert tail(log) == "out\nerr\n"


def test_a_non_zero_exit_names_its_code(tmp_path):
    outcome = run(["sh", "-c", "exit 7"], {}, log_path=tmp_path / "j.log", timeout_s=None, should_stop=never)
    assert (outcome.exit_code, outcome.reason) == (7, "exit code 7")


def test_a_program_that_does_not_exist_fails_to_start_saying_so(tmp_path):
    outcome = run(["no-such-program-xyz"], {"PATH": "/usr/bin"}, log_path=tmp_path / "j.log",
                  timeout_s=None, should_stop=never)
    assert outcome.exit_code is None and "cannot start 'no-such-program-xyz'" in outcome.reason


def test_a_timeout_kills_the_group_including_background_children(tmp_path):
    pidfile = tmp_path / "bg.pid"
    started = time.monotonic()
    outcome = run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], {"PATH": "/usr/bin:/bin"},
                  log_path=tmp_path / "j.log", timeout_s=0.5, should_stop=never, poll_s=0.05)
    assert outcome.reason == "timeout"
    assert time.monotonic() - started < 5
    assert not alive(int(pidfile.read_text()))


def test_a_stop_request_kills_the_group_and_is_a_cancel(tmp_path):
    calls = iter([None, None, "job is CANCELLED"])
    outcome = run(["sleep", "30"], {"PATH": "/usr/bin:/bin"}, log_path=tmp_path / "j.log",
                  timeout_s=None, should_stop=lambda: next(calls), poll_s=0.05)
    assert outcome.cancelled and outcome.reason == "job is CANCELLED"


def test_leftover_background_processes_die_when_the_job_exits(tmp_path):
    pidfile = tmp_path / "bg.pid"
    outcome = run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}"], {"PATH": "/usr/bin:/bin"},
                  log_path=tmp_path / "j.log", timeout_s=None, should_stop=never)
    assert outcome.exit_code == 0
    assert not alive(int(pidfile.read_text()))


def test_the_fake_executor_sleeps_for_the_declared_duration_and_runs_nothing(tmp_path):
    started = time.monotonic()
    outcome = fake_run(["sleep", "0.3"], log_path=tmp_path / "j.log", should_stop=never)
    assert outcome.exit_code == 0 and 0.25 < time.monotonic() - started < 2
    assert "fake executor" in tail(tmp_path / "j.log")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_waiting_on_jobs_leaves_no_file_descriptor_open(tmp_path):
    before = len(os.listdir("/proc/self/fd"))
    for i in range(30):
        assert run(["sh", "-c", f"exit {i % 3}"], {"PATH": "/usr/bin:/bin"}, log_path=tmp_path / "j.log",
                   timeout_s=None, should_stop=never).exit_code == i % 3
    assert len(os.listdir("/proc/self/fd")) == before


def test_without_pidfds_exits_timeouts_and_stops_still_work(tmp_path, monkeypatch):
    # Given a kernel (or platform) without pidfd_open
    def unsupported(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", unsupported)
    env = {"PATH": "/usr/bin:/bin"}
    assert run(["sh", "-c", "exit 3"], env, log_path=tmp_path / "j.log", timeout_s=None,
               should_stop=never).exit_code == 3
    assert run(["sleep", "30"], env, log_path=tmp_path / "j.log", timeout_s=0.3, should_stop=never,
               poll_s=0.05).reason == "timeout"
    assert run(["sleep", "30"], env, log_path=tmp_path / "j.log", timeout_s=None, poll_s=0.05,
               should_stop=lambda: "cancelled by user").reason == "cancelled by user"
