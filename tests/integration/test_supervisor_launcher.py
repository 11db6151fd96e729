"""Supervisors forked by the node's launcher (workers/launcher.py) rather than started as new
interpreters: each in a session of its own, reaped when it ends, outliving the launcher
(and its agent); a launcher that dies is replaced, one that cannot start is said once and
the agent starts its supervisors the old way. Real processes, no mocks."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ROOT, TERMINAL, Stack, logs, submit, wait_state, wait_until
from tests.integration.test_supervisor_process import spec
from workers import attempts, procfs
from workers.attempts import AttemptDir, Launched, Launcher, LauncherUnavailable


@pytest.fixture
def launcher() -> Any:
    started = Launcher()
    yield started
    started.close()


def prepared(tmp_path: Path, name: str, argv: list[str]) -> AttemptDir:
    directory = AttemptDir(tmp_path / "state" / f"{name}.1", name, 1)
    job = spec(tmp_path, argv, job_id=f"{name}-{os.getpid()}", log_path=str(tmp_path / f"{name}.log"))
    attempts.prepare(directory, job)
    return directory


def run_to_end(supervisor: Launched) -> None:
    try:
        wait_until(lambda: supervisor.ended(0.2), timeout=60, what="the supervisor to end")
    finally:
        supervisor.close()


def gone(pid: int) -> bool:
    """Not even a zombie: its parent reaped it."""
    return not Path(f"/proc/{pid}").exists()


def test_a_forked_supervisor_runs_its_attempt_in_a_session_of_its_own_and_is_reaped(tmp_path, launcher):
    # Given a prepared attempt of a job that runs until cancelled
    directory = prepared(tmp_path, "own", ["sh", "-c", "echo hello; sleep 30"])
    # When the launcher starts its supervisor
    supervisor = launcher.launch(directory)
    # Then the supervisor is the launcher's child, in a session of its own, and says so in
    # the attempt's directory (pid and start time) as one started by exec does
    wait_until(lambda: directory.supervisor_alive(), timeout=30, what="the supervisor's record")
    record = (directory.path / "supervisor").read_text().split()
    assert record == [str(supervisor.pid), str(supervisor.started)]
    assert procfs_parent(supervisor.pid) == launcher.pid
    assert procfs.session_of(supervisor.pid) == supervisor.pid != procfs.session_of(launcher.pid or 0)
    assert not supervisor.ended(0)
    # When the agent cancels it
    directory.cancel("job is CANCELLED")
    run_to_end(supervisor)
    # Then it recorded the end, wrote the job's log, and was reaped (no zombie left)
    outcome = directory.outcome()
    assert outcome is not None and outcome["cancelled"] and outcome["reason"] == "job is CANCELLED", outcome
    assert "hello\n" in (tmp_path / "own.log").read_text()
    wait_until(lambda: gone(supervisor.pid), timeout=30, what="the launcher to reap its child")
    assert (directory.path / "supervisor.err").read_text() == ""


def test_supervisors_outlive_their_launcher_and_a_dead_launcher_is_replaced(tmp_path, launcher, caplog):
    # Given a supervised job that ends when a file appears
    go = tmp_path / "go"
    directory = prepared(tmp_path, "outlives",
                         ["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.1; done; echo finished"])
    supervisor = launcher.launch(directory)
    first = launcher.pid
    assert first is not None
    wait_until(lambda: directory.supervisor_alive(), timeout=30, what="the supervisor to start")
    # When the launcher is killed
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: launcher.proc is not None and launcher.proc.poll() is not None, timeout=30,
               what="the launcher to die")
    # Then the job runs on to its end under its supervisor
    go.touch()
    run_to_end(supervisor)
    outcome = directory.outcome()
    assert outcome is not None and (outcome["exit_code"], outcome["reason"]) == (0, None), outcome
    assert "finished" in (tmp_path / "outlives.log").read_text()
    # and the next attempt is started by a new launcher, saying so
    with caplog.at_level(logging.INFO, logger="workers.attempts"):
        after = launcher.launch(prepared(tmp_path, "after", ["true"]))
    run_to_end(after)
    assert launcher.pid not in (None, first)
    assert "the supervisor launcher is gone" in caplog.text


def test_a_launcher_that_cannot_start_is_said_once_and_not_tried_again_at_once(tmp_path, caplog):
    # Given a launcher command that exits at once
    broken = Launcher(argv=[sys.executable, "-c", "import sys; sys.exit(3)"])
    directory = prepared(tmp_path, "broken", ["true"])
    # When two attempts are launched
    with caplog.at_level(logging.WARNING, logger="workers.attempts"):
        for _ in range(2):
            with pytest.raises(LauncherUnavailable):
                broken.launch(directory)
    # Then each is refused (so the agent starts it by exec), with one warning, and nothing
    # was started for them
    warnings = [r for r in caplog.records if "cannot use the supervisor launcher" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert broken.proc is None and not (directory.path / "supervisor").exists()


def test_the_launcher_exits_when_its_agent_closes_its_end(launcher, tmp_path):
    run_to_end(launcher.launch(prepared(tmp_path, "one", ["true"])))
    proc = launcher.proc
    assert proc is not None and launcher.sock is not None
    launcher.sock.close()
    assert proc.wait(timeout=30) == 0


def test_a_supervisor_that_ended_and_was_reaped_before_it_is_waited_for_counts_as_ended():
    # This process's pid with another start time: what a reaped supervisor's reused pid looks like
    assert Launched(os.getpid(), started=1).ended(0)


def test_the_launcher_loads_no_celery_sqlalchemy_flask_or_redis():
    imported = subprocess.run([sys.executable, "-c", "import sys, workers.launcher; "
                               "print(sorted(m for m in ('celery', 'sqlalchemy', 'flask', 'kombu', 'redis') "
                               "if m in sys.modules))"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"


# -- in an agent ------------------------------------------------------------------------------

def launchers_of(stack: Stack, node: str) -> list[int]:
    """The agent's children that are supervisor launchers."""
    agent = stack.procs[node].pid
    found = []
    for pid in procfs.pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"workers.launcher" in cmdline and procfs_parent(pid) == agent:
            found.append(pid)
    return found


def procfs_parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@pytest.mark.slow
def test_an_agent_whose_launcher_is_killed_keeps_its_job_and_starts_another(stack, tmp_path):
    # Given node-a running a job that ends when a file appears, its supervisor forked by
    # the agent's launcher
    stack.start_cluster(agents=("node-a",))
    go = tmp_path / "go"
    submit(stack, job_id="waits", cmd=["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.1; done; echo ran on"])
    record = stack.workdir / "state" / "node-a" / "waits.1" / "supervisor"
    wait_until(record.exists, timeout=30, what="the job's supervisor")
    [first] = launchers_of(stack, "node-a")
    assert procfs_parent(int(record.read_text().split()[0])) == first
    # When the launcher is killed
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: first not in launchers_of(stack, "node-a") or not procfs.alive(first), timeout=30,
               what="the launcher to die")
    go.touch()
    # Then the job ends DONE all the same
    done = wait_state(stack, "waits", TERMINAL, timeout=60)
    assert (done["state"], done["exit_code"]) == ("DONE", 0), done
    assert "ran on" in logs(stack, "waits")
    # and the next job's supervisor comes from a new launcher
    submit(stack, job_id="next", cmd=["true"])
    assert wait_state(stack, "next", TERMINAL, timeout=60)["state"] == "DONE"
    assert [p for p in launchers_of(stack, "node-a") if p != first]
    wait_until(lambda: "the supervisor launcher is gone" in stack.output("node-a"), timeout=10,
               what="the agent to say it started another launcher")


@pytest.mark.slow
def test_supervisor_launcher_exec_starts_each_supervisor_as_a_new_interpreter(stack):
    # Given an agent told to start supervisors by exec
    stack.env.update(SUPERVISOR_LAUNCHER="exec")
    stack.start_cluster(agents=("node-a",))
    # When a job runs
    submit(stack, job_id="exec", cmd=["sh", "-c", "echo by exec"])
    done = wait_state(stack, "exec", TERMINAL, timeout=60)
    # Then it ends DONE and the agent started no launcher
    assert (done["state"], done["exit_code"]) == ("DONE", 0), done
    assert "by exec" in logs(stack, "exec")
    assert launchers_of(stack, "node-a") == []

