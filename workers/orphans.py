"""Job processes a dead agent left behind: recorded while they run, killed when the agent restarts.

A job runs in a session of its own (``start_new_session``), so a SIGKILLed agent
does not take it down: the process keeps running, and keeps its GPU, although
reconcile has already given its attempt up. The agent therefore writes one small
file per running attempt, ``<LOG_DIR>/.running/<node>/<job_id>.<attempt>.pid``
holding the session id and the leader's start time, removes it when the attempt
ends, and on start kills every session such a file names before it takes work.

Only processes that are provably the job's are killed: every process of the
session while its leader is alive with the recorded start time (so a reused pid is
never mistaken for it), else those of the session whose environment still carries
the job's ``OVERLAY_JOB_ID`` and ``OVERLAY_ATTEMPT``.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from workers.procfs import alive, environ_items, pids, session_of, start_time

log = logging.getLogger(__name__)
GRACE_S = 2.0


@dataclass(frozen=True, kw_only=True)
class Leftover:
    """One attempt a previous agent process was running, as its pid file says."""

    job_id: str
    attempt: int
    sid: int
    start_time: int
    path: Path


def running_dir(log_dir: str, node: str) -> Path:
    return Path(log_dir) / ".running" / node


def record(directory: Path, job_id: str, attempt: int, pid: int) -> Path:
    """Write the pid file of a job's session leader; raise OSError."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{job_id}.{attempt}.pid"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pid} {start_time(pid) or 0}\n")
    tmp.replace(path)
    return path


def forget(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def leftovers(directory: Path) -> list[Leftover]:
    """The attempts recorded in ``directory``; unreadable files are skipped and removed."""
    found = []
    for path in sorted(directory.glob("*.pid")) if directory.is_dir() else []:
        stem, _, attempt = path.name.removesuffix(".pid").rpartition(".")
        try:
            sid, started = (int(x) for x in path.read_text().split())
            found.append(Leftover(job_id=stem, attempt=int(attempt), sid=sid, start_time=started,
                                  path=path))
        except (OSError, ValueError):
            log.warning("ignoring unreadable pid file %s", path)
            forget(path)
    return found


def kill_leftovers(directory: Path) -> list[Leftover]:
    """Kill what each recorded attempt left running, remove its file; return the attempts."""
    found = leftovers(directory)
    for left in found:
        pids = session_members(left)
        if pids:
            log.warning("job %s attempt %s: killing %d process(es) its dead agent left running "
                        "(session %s)", left.job_id, left.attempt, len(pids), left.sid)
            terminate(pids)
        forget(left.path)
    return found


def session_members(left: Leftover) -> list[int]:
    """Pids that belong to the recorded attempt (see the module docstring)."""
    leader_is_ours = left.start_time != 0 and start_time(left.sid) == left.start_time
    marks = {f"OVERLAY_JOB_ID={left.job_id}".encode(), f"OVERLAY_ATTEMPT={left.attempt}".encode()}
    return [pid for pid in pids()
            if session_of(pid) == left.sid and (leader_is_ours or marks <= environ_items(pid))]


def terminate(members: list[int], *, grace_s: float = GRACE_S) -> None:
    """SIGTERM, then SIGKILL whatever is still there after ``grace_s``."""
    _signal_all(members, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in members):
        time.sleep(0.05)
    _signal_all([p for p in members if alive(p)], signal.SIGKILL)


def _signal_all(members: list[int], sig: int) -> None:
    for pid in members:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
