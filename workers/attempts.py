"""The node's attempt directories: one per attempt a supervisor runs, under STATE_DIR.

``<STATE_DIR>/<node>/<job_id>.<attempt>/`` holds ``spec.json`` (what to run, written
by the agent before the supervisor starts), ``lease`` (touched by the agent while its
heartbeats reach Postgres), ``cancel`` (made by the agent to stop the job, holding the
reason), ``preempt`` (made by the agent to preempt it: the reason and the grace time;
the supervisor then writes ``preempted``, the file the job's OVERLAY_PREEMPT_FILE names),
``supervisor`` (its pid and start time) and ``outcome.json`` (how the attempt
ended, written durably by the supervisor). The agent removes the directory once the
outcome is in Postgres, so what is left here after a crash is exactly what is unreported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers import cgroups, procfs
from workers.supervisor import group_name, write_atomically


def node_dir(state_dir: str, node: str) -> Path:
    return Path(state_dir) / node


@dataclass(frozen=True)
class AttemptDir:
    """One attempt's directory."""

    path: Path
    job_id: str
    attempt: int

    @classmethod
    def of(cls, state_dir: str, node: str, job_id: str, attempt: int) -> AttemptDir:
        return cls(node_dir(state_dir, node) / f"{job_id}.{attempt}", job_id, attempt)

    @property
    def key(self) -> tuple[str, int]:
        return self.job_id, self.attempt

    def outcome(self) -> dict[str, Any] | None:
        """How the attempt ended, once its supervisor recorded it."""
        try:
            return json.loads((self.path / "outcome.json").read_text())  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            return {"exit_code": None, "reason": f"unreadable outcome record: {e}"}

    def spec(self) -> dict[str, Any]:
        """What the agent wrote for the supervisor ({} if unreadable)."""
        try:
            return json.loads((self.path / "spec.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def gpus(self) -> tuple[int, ...]:
        """The GPU indices the attempt runs on, as its spec says (none if unreadable)."""
        try:
            return tuple(json.loads((self.path / "spec.json").read_text())["gpus"])
        except (OSError, ValueError, KeyError):
            return ()

    def supervisor_alive(self) -> bool:
        """Whether the supervisor this directory names still runs (pid and start time match)."""
        try:
            pid, started = (int(x) for x in (self.path / "supervisor").read_text().split())
        except (OSError, ValueError):
            return False
        return procfs.alive(pid) and procfs.start_time(pid) == started

    def renew(self) -> None:
        """Renew the supervisor's lease (it watches this file's mtime and size change)."""
        lease = self.path / "lease"
        try:
            os.utime(lease)
        except FileNotFoundError:
            lease.touch()

    def cancel(self, reason: str) -> None:
        """Ask the supervisor to kill the job (it looks every few tenths of a second)."""
        if not (self.path / "cancel").exists():
            write_atomically(self.path / "cancel", reason.encode())

    def preempt(self, reason: str, *, grace_s: float) -> bool:
        """Ask the supervisor to preempt the job (SIGTERM, ``grace_s``, the kill); whether
        this is the first time it is asked."""
        if (self.path / "preempt").exists():
            return False
        write_atomically(self.path / "preempt", json.dumps({"reason": reason, "grace_s": grace_s}).encode())
        return True

    @property
    def notice(self) -> Path:
        """The file a preempted job finds (OVERLAY_PREEMPT_FILE): made only on preemption."""
        return self.path / "preempted"

    def kill_leftovers(self) -> None:
        """Kill what is left of the job when its supervisor died without an outcome."""
        cgroups.kill_leftover(group_name(self.spec() or {"job_id": self.job_id, "attempt": self.attempt}))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def found(state_dir: str, node: str) -> list[AttemptDir]:
    """Every attempt directory of ``node``."""
    root = node_dir(state_dir, node)
    dirs = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        job_id, _, attempt = path.name.rpartition(".")
        if path.is_dir() and attempt.isdigit() and job_id:
            dirs.append(AttemptDir(path, job_id, int(attempt)))
    return dirs


def start(directory: AttemptDir, spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Write the spec and a fresh lease, then start the supervisor in a session of its own
    (so neither a signal to the agent's process group nor its exit reaches it); raise OSError."""
    directory.path.mkdir(parents=True, exist_ok=True)
    for stale in ("outcome.json", "cancel", "preempt", "preempted", "supervisor"):
        (directory.path / stale).unlink(missing_ok=True)
    write_atomically(directory.path / "spec.json", json.dumps(spec).encode())
    directory.renew()
    err = open(directory.path / "supervisor.err", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.supervisor", str(directory.path)],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
            cwd=os.getcwd(), env=supervisor_env(),
        )
    finally:
        err.close()


def supervisor_env() -> dict[str, str]:
    """The supervisor's own environment: enough to find Python and workers/, nothing secret."""
    keep = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ", "VIRTUAL_ENV")
    return {k: os.environ[k] for k in keep if k in os.environ}
