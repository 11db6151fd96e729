"""Runs one job's process: its own process group, output to a log file, timeout and cancel."""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from workers import procfs

log = logging.getLogger(__name__)
KILL_GRACE_S = 1.0
TAIL_BYTES = 4096


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How a job's process ended. ``reason`` is None for a clean exit 0."""

    exit_code: int | None
    reason: str | None
    cancelled: bool = False


def run(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    log_path: Path,
    timeout_s: float | None,
    should_stop: Callable[[], str | None],
    poll_s: float = 0.25,
    user: str | None = None,
    cwd: str | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Outcome:
    """Run ``argv`` (no shell) until it exits, times out, or ``should_stop`` names a reason.

    The whole process group is killed at the end in every case, so nothing the job
    started in the background keeps a GPU. ``on_start`` gets the pid of the job's
    session leader as soon as it exists (the agent records it, see workers/orphans.py).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as out:
        try:
            proc = subprocess.Popen(
                list(argv), env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd,
                user=user or None, group=_group_of(user), extra_groups=[] if user else None,
            )
        except (OSError, KeyError) as e:
            out.write(f"overlay: cannot start {argv[0]!r}: {e}\n".encode())
            return Outcome(exit_code=None, reason=f"cannot start {argv[0]!r}: {e}")
        if on_start is not None:
            on_start(proc.pid)
        return _supervise(proc, timeout_s=timeout_s, should_stop=should_stop, poll_s=poll_s)


def _supervise(
    proc: subprocess.Popen[bytes],
    *,
    timeout_s: float | None,
    should_stop: Callable[[], str | None],
    poll_s: float,
) -> Outcome:
    deadline = time.monotonic() + timeout_s if timeout_s else None
    exited = _ExitWatch(proc)
    try:
        while True:
            code = exited.wait(poll_s)
            if code is not None:
                return Outcome(exit_code=code, reason=None if code == 0 else f"exit code {code}")
            if deadline is not None and time.monotonic() >= deadline:
                _kill_group(proc)
                return Outcome(exit_code=proc.returncode, reason="timeout")
            stop = should_stop()
            if stop is not None:
                _kill_group(proc)
                return Outcome(exit_code=proc.returncode, reason=stop, cancelled=True)
    finally:
        exited.close()
        _kill_group(proc)


class _ExitWatch:
    """Waits up to N seconds for a process to exit, waking the moment it does.

    A pidfd (Linux 5.3+) is readable once the process has exited. Popen.wait(timeout)
    instead polls with sleeps that double up to 50 ms, which made a short job's end late
    by about as long as the job itself and woke each running job's thread 20 times a
    second. Where pidfds are missing it falls back to Popen.wait.
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.poller = select.poll()
        try:
            self.fd: int | None = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self.fd = None
        else:
            self.poller.register(self.fd, select.POLLIN)

    def wait(self, seconds: float) -> int | None:
        """The exit code, or None if the process still runs after ``seconds``."""
        if self.fd is None:
            try:
                return self.proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                return None
        return self.proc.wait() if self.poller.poll(seconds * 1000) else None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL what is left after a short grace; return once
    no member is left alive (a signal is delivered asynchronously: a member may still
    run for a moment after kill() returns)."""
    for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        if _group_gone(proc, within_s=grace):
            break
    proc.poll()


def _group_gone(proc: subprocess.Popen[bytes], *, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while True:
        proc.poll()  # reap the leader, so that it does not count as alive
        if not procfs.live_group_members(proc.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _group_of(user: str | None) -> int | None:
    if not user:
        return None
    import pwd

    return pwd.getpwnam(user).pw_gid


def tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a log, decoded leniently; '' if there is no log."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def fake_run(argv: Sequence[str], *, log_path: Path, should_stop: Callable[[], str | None]) -> Outcome:
    """EXECUTOR=fake: sleep for the duration the command declares (its last number), run nothing."""
    seconds = next((float(a) for a in reversed(argv) if _is_number(a)), 0.0)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as out:
        out.write(f"overlay fake executor: would run {list(argv)!r}; sleeping {seconds}s\n")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        stop = should_stop()
        if stop is not None:
            return Outcome(exit_code=None, reason=stop, cancelled=True)
        time.sleep(min(0.25, max(0.0, end - time.monotonic())))
    return Outcome(exit_code=0, reason=None)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
