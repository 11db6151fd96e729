"""The job supervisor: one small process per attempt, the job's parent, outliving agent restarts.

Started by the agent as ``python -m workers.supervisor <attempt dir>`` in a session of
its own. The attempt directory (workers/attempts.py) holds what the agent wrote
(``spec.json``: argv, environment, user, log, limits; ``lease``, touched while the
agent's heartbeats reach Postgres; ``cancel``, made to cancel) and what this process
writes (``supervisor``: its pid and start time; ``outcome.json``, durably, before it exits).

It imports the standard library, workers.cgroups and workers.gpu_isolation only (no
Celery, Flask or SQLAlchemy: .importlinter), so it starts in a few tens of milliseconds and holds no
database connection or secret of the agent's.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workers import cgroups, gpu_isolation

TICK_S = 0.2
KILL_GRACE_S = 1.0
PR_SET_CHILD_SUBREAPER = 36


def write_atomically(path: Path, data: bytes) -> None:
    """Write, fsync, rename over ``path``, fsync the folder: all of it or none survives a crash."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def start_time(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot (0 if unknown): a pid with its start
    time names one process even after the pid is reused."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(text[text.rfind(")") + 2:].split()[19])


class LogWriter:
    """The job's output into its log: opened with O_NOFOLLOW, capped at ``max_bytes`` (file
    size) after which one marker line is written and the rest is dropped. Raises OSError."""

    def __init__(self, path: str, *, max_bytes: int, marker: str) -> None:
        self.path, self.max_bytes, self.marker = path, max_bytes, marker
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                          0o640)
        self.size = os.fstat(self.fd).st_size
        self.truncated = False

    def write(self, data: bytes) -> None:
        if self.truncated:
            return
        room = self.max_bytes - self.size if self.max_bytes > 0 else len(data)
        if len(data) > room:
            data = data[:max(0, room)]
            self.truncated = True
        while data:
            n = os.write(self.fd, data)
            self.size += n
            data = data[n:]
        if self.truncated:
            mark = self.marker.encode()
            os.write(self.fd, mark)
            self.size += len(mark)

    def close(self) -> None:
        os.close(self.fd)


class Lease:
    """The agent's lease on this attempt, judged on this process's monotonic clock: it
    lapses when the lease file has not changed for ``fence_s``."""

    def __init__(self, path: Path, fence_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.fence_s, self.clock = path, fence_s, clock
        self.seen = self._stamp()
        self.renewed_at = clock()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def lapsed(self) -> bool:
        stamp = self._stamp()
        now = self.clock()
        if stamp is not None and stamp != self.seen:
            self.seen, self.renewed_at = stamp, now
        return now - self.renewed_at > self.fence_s


def child_setup(group: cgroups.Group, masked: list[str] | None, ids: tuple[int, int] | None,
                why_fd: int) -> Callable[[], None]:
    """What the job's first process does before it execs: join the group, mask the other
    GPUs' device nodes in a mount namespace of its own (``masked``; None: none), then drop
    to the job's user (``ids``: uid, gid). An OSError's text goes to ``why_fd`` first."""

    def in_child() -> None:  # the supervisor is single-threaded: a preexec_fn is safe
        try:
            group.join()
            if masked is not None:  # while still root: mounts need CAP_SYS_ADMIN
                gpu_isolation.mask(masked)
            if ids is not None:
                os.setgroups([])
                os.setgid(ids[1])
                os.setuid(ids[0])
        except OSError as e:
            os.write(why_fd, str(e).encode())
            raise

    return in_child


class Job:
    """The job's process and its group, run to its end."""

    def __init__(self, spec: dict[str, Any], group: cgroups.Group, log: LogWriter) -> None:
        self.spec, self.group, self.log = spec, group, log
        self.status: int | None = None

    def start(self) -> None:
        """Start the argv (no shell) in the group, as the spec's user; raise OSError."""
        self.read_fd, write_fd = os.pipe()
        user = self.spec.get("user")
        ids = None
        if user:
            import pwd

            entry = pwd.getpwnam(user)
            ids = (entry.pw_uid, entry.pw_gid)
        # What went wrong in the child before exec (Popen only says "Exception occurred in
        # preexec_fn"): written there, read back here.
        why_r, why_w = os.pipe2(os.O_CLOEXEC)
        in_child = child_setup(self.group, self.masked_nodes(), ids, why_w)
        try:
            try:
                self.proc = subprocess.Popen(
                    self.spec["argv"], env=self.spec["env"], stdin=subprocess.DEVNULL, stdout=write_fd,
                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=in_child,
                    close_fds=True,
                )
            finally:
                os.close(write_fd)
                os.close(why_w)
        except subprocess.SubprocessError as e:
            why = os.read(why_r, 4096).decode(errors="replace")
            if why:
                raise OSError(why) from e
            raise
        finally:
            os.close(why_r)
        self.pid = self.proc.pid

    def masked_nodes(self) -> list[str] | None:
        """The device nodes to mask in the job's mount namespace (None: no namespace)."""
        if self.spec.get("gpu_isolation") != "namespace":
            return None
        return gpu_isolation.masked_nodes(self.spec.get("device_dir") or "/dev", tuple(self.spec["gpus"]))

    def reap(self) -> None:
        """Reap every exited child (this process is their subreaper), keeping the job's status."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                self.status = status
                self.proc.returncode = os.waitstatus_to_exitcode(status)

    def drain(self) -> None:
        """Copy what is left in the pipe to the log, up to EOF (every writer is dead by now;
        an escaped writer outside any cgroup is waited for no more than a second of silence)."""
        while readable(self.read_fd, timeout_s=1.0):
            data = os.read(self.read_fd, 65536)
            if not data:
                break
            self.log.write(data)
        os.close(self.read_fd)

    def kill(self) -> None:
        self.group.kill(self.pid, grace_s=self.spec.get("kill_grace_s", KILL_GRACE_S), reap=self.reap)


def group_name(spec: dict[str, Any]) -> str:
    """The attempt's cgroup: ``<job_id>.<attempt>``, and ``.part<K>`` for part K > 0 of a gang
    job (two parts' agents may share a host's cgroup tree)."""
    part = spec.get("part") or 0
    return f"{spec['job_id']}.{spec['attempt']}" + (f".part{part}" if part else "")


def run(directory: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Run the attempt to its end; the outcome to record."""
    # Device rules only where the agent chose the devices cgroup (a spec without a choice was
    # written by an agent that knew no other).
    devices = spec.get("gpu_isolation", "devices") == "devices"
    limits = cgroups.Limits(memory_mb=spec.get("memory_mb") or 0,
                            gpus=tuple(spec["gpus"]) if devices else None,
                            device_dir=spec.get("device_dir") or "/dev")
    try:
        log = LogWriter(spec["log_path"], max_bytes=spec.get("log_max_bytes", 0), marker=spec["log_marker"])
        log.write(spec.get("header", "").encode())
    except OSError as e:
        return {"exit_code": None, "reason": f"cannot write log {spec['log_path']}: {e}"}
    try:
        group = cgroups.open_group(group_name(spec), limits)
    except OSError as e:
        log.write(f"overlay: {e}\n".encode())
        return {"exit_code": None, "reason": str(e)}
    try:
        return _supervise(directory, spec, group, log)
    finally:
        group.remove()
        log.close()


def _supervise(directory: Path, spec: dict[str, Any], group: cgroups.Group, log: LogWriter) -> dict[str, Any]:
    job = Job(spec, group, log)
    try:
        job.start()
    except (OSError, KeyError, subprocess.SubprocessError) as e:
        reason = f"cannot start {spec['argv'][0]!r}: {e}"
        try:
            log.write(f"overlay: {reason}\n".encode())
        except OSError:
            pass
        return {"exit_code": None, "reason": reason}
    stop = _watch(directory, spec, job)
    # Whatever ended the attempt, nothing of the job outlives it (daemons it started too).
    job.kill()
    job.reap()
    try:
        job.drain()
    except OSError as e:
        stop = stop or {"reason": f"cannot write log {spec['log_path']}: {e}"}
    outcome = {"exit_code": job.proc.returncode, "log_truncated": log.truncated}
    if stop is not None:
        outcome.update(stop)
    elif group.oom_killed():
        outcome["reason"] = f"out of memory (limit {group.memory_mb} MiB)"
    elif job.proc.returncode != 0:
        outcome["reason"] = f"exit code {job.proc.returncode}"
    else:
        outcome["reason"] = None
    return outcome


def _watch(directory: Path, spec: dict[str, Any], job: Job) -> dict[str, Any] | None:
    """Until the job's first process exits (None) or something stops it (what, as outcome fields)."""
    deadline = time.monotonic() + spec["timeout_s"] if spec.get("timeout_s") else None
    lease = Lease(directory / "lease", spec["fence_s"])
    cancel = directory / "cancel"
    preempt = directory / "preempt"
    preempted: dict[str, Any] | None = None  # once preempted: the outcome, and its grace's end
    grace_ends = 0.0
    poller = select.poll()
    pidfd: int | None = None
    try:  # readable the moment the job's first process exits (Linux 5.3+); else seen each tick
        pidfd = os.pidfd_open(job.pid)
    except (AttributeError, OSError):
        pass
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    poller.register(job.read_fd, select.POLLIN)
    try:
        while True:
            for fd, _ in poller.poll(TICK_S * 1000):
                if fd == job.read_fd:
                    try:
                        data = os.read(job.read_fd, 65536)
                        if data:
                            job.log.write(data)
                        else:
                            poller.unregister(job.read_fd)  # EOF: only the exit is left to see
                    except OSError as e:
                        return {"reason": f"cannot write log {spec['log_path']}: {e}"}
            job.reap()
            if job.status is not None:
                return preempted
            if preempted is not None:
                if time.monotonic() >= grace_ends:
                    return preempted  # the grace is over: the caller kills what is left
            elif preempt.exists():
                preempted, grace_s = begin_preemption(directory, job)
                grace_ends = time.monotonic() + grace_s
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return {"reason": "timeout"}
            if cancel.exists():
                return {"reason": cancel.read_text().strip() or "cancelled", "cancelled": True}
            if lease.lapsed():
                return {"reason": f"fenced: the agent did not renew its lease for {spec['fence_s']}s",
                        "fenced": True}
    finally:
        if pidfd is not None:
            os.close(pidfd)


def begin_preemption(directory: Path, job: Job) -> tuple[dict[str, Any], float]:
    """Make the job's notice file (OVERLAY_PREEMPT_FILE: ``OVERLAY_PREEMPTED=1``), SIGTERM
    every process of the job; the outcome to record and the grace time it has to exit."""
    asked = json.loads((directory / "preempt").read_text())
    reason, grace_s = str(asked.get("reason") or "preempted"), float(asked.get("grace_s") or 0.0)
    notice = (f"OVERLAY_PREEMPTED=1\nOVERLAY_PREEMPT_REASON={reason}\n"
              f"OVERLAY_PREEMPT_GRACE_S={grace_s:g}\n").encode()
    write_atomically(directory / "preempted", notice)
    os.chmod(directory / "preempted", 0o644)  # the job may run as JOB_USER
    job.log.write(f"\n=== overlay: {reason}: SIGTERM, {grace_s:g}s to checkpoint and exit, "
                  "then the kill ===\n".encode())
    job.group.signal_all(job.pid, signal.SIGTERM)
    return {"reason": reason, "preempted": True}, grace_s


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m workers.supervisor <attempt dir>", file=sys.stderr)
        return 2
    directory = Path(argv[1])
    spec = json.loads((directory / "spec.json").read_text())
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # without it an escaped daemon's zombie is reaped by init, not here
    me = os.getpid()
    write_atomically(directory / "supervisor", f"{me} {start_time(me)}\n".encode())
    started = time.time()
    outcome = run(directory, spec)
    outcome.update(started_at=started, ended_at=time.time())
    write_atomically(directory / "outcome.json", json.dumps(outcome).encode())
    return 0


def readable(fd: int, *, timeout_s: float) -> bool:
    """Whether ``fd`` has something to read (or hit its end) within ``timeout_s``."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout_s * 1000))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
