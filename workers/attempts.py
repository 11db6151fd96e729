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
import logging
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from workers import cgroups, launcher, procfs
from workers.supervisor import group_name, write_atomically

log = logging.getLogger(__name__)


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


def prepare(directory: AttemptDir, spec: dict[str, Any]) -> None:
    """Write the spec and a fresh lease, before a supervisor starts; raise OSError."""
    directory.path.mkdir(parents=True, exist_ok=True)
    for stale in ("outcome.json", "cancel", "preempt", "preempted", "supervisor"):
        (directory.path / stale).unlink(missing_ok=True)
    write_atomically(directory.path / "spec.json", json.dumps(spec).encode())
    directory.renew()


class Supervisor(Protocol):
    """A started supervisor, as the agent waits for it."""

    def ended(self, timeout_s: float) -> bool:
        """Whether it has exited, waiting up to ``timeout_s`` for it."""

    def close(self) -> None:
        """Let go of it (it runs on if it has not ended)."""


class Spawned:
    """A supervisor started as a new interpreter, a child of this process."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def ended(self, timeout_s: float) -> bool:
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        pass


def spawn(directory: AttemptDir) -> Spawned:
    """Start ``python -m workers.supervisor`` on a prepared directory, in a session of its
    own (so neither a signal to the agent's process group nor its exit reaches it); raise OSError."""
    err = open(directory.path / "supervisor.err", "ab")  # noqa: SIM115 - handed to the child
    try:
        return Spawned(subprocess.Popen(
            [sys.executable, "-m", "workers.supervisor", str(directory.path)],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
            cwd=os.getcwd(), env=supervisor_env(),
        ))
    finally:
        err.close()


def start(directory: AttemptDir, spec: dict[str, Any]) -> Spawned:
    """prepare() then spawn(); raise OSError."""
    prepare(directory, spec)
    return spawn(directory)


class Launched:
    """A supervisor the node's launcher forked: not this process's child, so its end is seen
    on a pidfd (readable once it exits), or where there is none by polling /proc."""

    POLL_S = 0.02

    def __init__(self, pid: int, started: int) -> None:
        self.pid, self.started = pid, started
        self.pidfd: int | None = None
        self.gone = False
        try:
            self.pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.gone = True
            return
        except (AttributeError, OSError):
            pass  # no pidfds here (Linux < 5.3): polled
        if procfs.start_time(pid) != started:  # ended and reaped already, its pid perhaps reused
            self.close()
            self.gone = True

    def ended(self, timeout_s: float) -> bool:
        if self.gone:
            return True
        if self.pidfd is not None:
            poller = select.poll()
            poller.register(self.pidfd, select.POLLIN)
            return bool(poller.poll(timeout_s * 1000))
        deadline = time.monotonic() + timeout_s
        while procfs.alive(self.pid) and procfs.start_time(self.pid) == self.started:
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.POLL_S)
        return True

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class LauncherUnavailable(OSError):
    """The launcher could not start this supervisor, and did not: start it another way."""


class Launcher:
    """The agent's side of its supervisor launcher (workers/launcher.py): started on first
    use, started again when it died; after a launcher that fails at once, none is tried
    for ``retry_after_s`` (each launch() raises LauncherUnavailable meanwhile)."""

    def __init__(self, *, argv: list[str] | None = None, timeout_s: float = 30.0,
                 retry_after_s: float = 60.0) -> None:
        self.argv = argv or [sys.executable, "-m", "workers.launcher"]
        self.timeout_s, self.retry_after_s = timeout_s, retry_after_s
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.retry_at = 0.0

    @property
    def pid(self) -> int | None:
        """The launcher's pid while one runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def launch(self, directory: AttemptDir) -> Launched:
        """The supervisor of a prepared directory, forked by the launcher; raise
        LauncherUnavailable if it was not started (it never will be by this request)."""
        with self.lock:
            if time.monotonic() < self.retry_at:
                raise LauncherUnavailable("the supervisor launcher failed a moment ago")
            for _ in range(2):
                fresh = self.sock is None
                try:
                    if fresh:
                        self._start()
                    return self._ask(directory)
                except _Died as e:
                    self._stop()
                    if fresh:
                        why = str(e)
                        break
                    log.info("the supervisor launcher is gone (%s): starting another", e)
            self.retry_at = time.monotonic() + self.retry_after_s
            log.warning("cannot use the supervisor launcher (%s): supervisors start as new "
                        "interpreters (python -m workers.supervisor) for the next %.0f s", why,
                        self.retry_after_s)
            raise LauncherUnavailable(why)

    def close(self) -> None:
        with self.lock:
            self._stop()

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [*self.argv, str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=os.getcwd(), env=supervisor_env(),
            )
        except OSError as e:
            ours.close()
            raise _Died(f"cannot start it: {e}") from e
        finally:
            theirs.close()
        ours.settimeout(self.timeout_s)
        self.sock = ours

    def _ask(self, directory: AttemptDir) -> Launched:
        assert self.sock is not None
        try:
            self.sock.send(os.fsencode(directory.path.absolute()))
            reply = self.sock.recv(launcher.MAX_REQUEST)
        except TimeoutError as e:
            reply = self._last_word()
            if not reply:
                raise _Died(f"no answer in {self.timeout_s:.0f} s") from e
        except OSError as e:
            raise _Died(str(e)) from e
        if not reply:
            raise _Died("it exited")
        kind, _, rest = reply.decode(errors="replace").partition(" ")
        if kind != "ok":
            raise LauncherUnavailable(rest)
        pid, started = (int(x) for x in rest.split())
        return Launched(pid, started)

    def _last_word(self) -> bytes:
        """End a launcher that did not answer in time, then read the answer it may have sent
        just before (then its child may run: it must be waited for, not started again)."""
        sock = self.sock
        self.sock = None
        self._stop()
        assert sock is not None
        try:
            sock.setblocking(False)
            return sock.recv(launcher.MAX_REQUEST)
        except OSError:
            return b""
        finally:
            sock.close()

    def _stop(self) -> None:
        """Close the socket and end the launcher (a supervisor it forked but did not answer
        for reads EOF and exits unstarted); its running supervisors go on."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None


class _Died(Exception):
    """The launcher is not there, or died with the request (so nothing was started)."""


def supervisor_env() -> dict[str, str]:
    """The supervisor's own environment: enough to find Python and workers/, nothing secret."""
    keep = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ", "VIRTUAL_ENV")
    return {k: os.environ[k] for k in keep if k in os.environ}
