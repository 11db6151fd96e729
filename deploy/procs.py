"""Runs every process of a Procfile in the foreground with its output prefixed by name.

Unlike honcho and foreman, a process that dies does not take the others down: kill
node-a's agent and the rest of the local stack keeps running, as on a real cluster.
Ctrl-C (or SIGTERM, or closing the terminal) stops them all: each process group gets SIGTERM, and whatever is
left after GRACE_S seconds (or at a second Ctrl-C) gets SIGKILL.

    python deploy/procs.py deploy/Procfile

The signal handler only records the signal and wakes the main loop through a pipe
(signal.set_wakeup_fd); the main loop does the stopping. A handler that takes a lock
(threading.Event.set does) can deadlock when a second signal lands while the first
handler holds it, leaving the whole stack running.
"""

from __future__ import annotations

import ctypes
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

COLOURS = ("36", "33", "32", "35", "34", "31", "96", "93")
GRACE_S = float(os.environ.get("PROCS_GRACE_S", "10"))
POLL_S = 0.5
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
# SIGHUP too: the children run in sessions of their own, so a closed terminal reaches only us.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def read_procfile(path: Path) -> dict[str, str]:
    """``name: command`` lines, in order; blank lines and # comments skipped."""
    procs: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            procs[name.strip()] = command.strip()
    return procs


def pump(name: str, colour: str, width: int, stream, out) -> None:
    prefix = f"\x1b[{colour}m{time.strftime('%H:%M:%S')} {name:<{width}} |\x1b[0m " if out.isatty() else None
    for raw in iter(stream.readline, b""):
        head = prefix or f"{time.strftime('%H:%M:%S')} {name:<{width}} | "
        out.write(head + raw.decode(errors="replace"))
        out.flush()


class Signals:
    """SIGINT/SIGTERM/SIGHUP recorded by a handler that takes no lock; ``wait`` sleeps until one comes.

    The handler is a no-op; the wakeup fd gets the signal's number written by the
    interpreter's C-level handler (async-signal-safe), and ``wait`` reads it.
    """

    def __init__(self) -> None:
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            signal.signal(sig, _ignore)
        self.received = 0

    def wait(self, timeout: float) -> int:
        """Sleep up to ``timeout`` s or until a signal; return how many have come so far."""
        if select.select([self.read_fd], [], [], max(0.0, timeout))[0]:
            try:
                self.received += len(os.read(self.read_fd, 64))
            except BlockingIOError:
                pass
        return self.received


def _ignore(signum: int, frame: object) -> None:
    """The Python-level handler: nothing (the wakeup fd carries the signal to the main loop)."""


def start(procs: dict[str, str], signals: Signals) -> dict[str, subprocess.Popen[bytes]]:
    """Start each process in a session of its own; stop starting as soon as a signal came."""
    width = max(map(len, procs))
    running = {}
    for i, (name, command) in enumerate(procs.items()):
        if signals.wait(0):
            break
        proc = subprocess.Popen(
            ["sh", "-c", f"exec {command}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=pump, args=(name, COLOURS[i % len(COLOURS)], width, proc.stdout,
                                            sys.stdout), daemon=True).start()
        print(f"procs: started {name} (pid {proc.pid}): {shlex.split(command)[0]} ...", flush=True)
        running[name] = proc
    return running


def become_subreaper() -> None:
    """On Linux, adopt the stack's orphans (a gunicorn worker whose master died) so that
    ``reap_orphans`` can reap them: under an init that does not reap, their zombies would
    keep their process groups alive. Elsewhere, nothing."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def reap_orphans(running: dict[str, subprocess.Popen[bytes]]) -> None:
    """Reap the direct children through Popen (keeping their exit codes), then any adopted orphan."""
    ours = {proc.pid: proc for proc in running.values()}
    for proc in ours.values():
        proc.poll()
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None:
            return
        if info.si_pid in ours:
            if ours[info.si_pid].poll() is None:
                return
            continue
        try:
            os.waitpid(info.si_pid, os.WNOHANG)
        except ChildProcessError:
            pass


def signal_groups(groups: list[int], sig: int) -> list[int]:
    """Send ``sig`` to each process group; return the groups that still have a process."""
    left = []
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            continue
        except PermissionError:  # a lone zombie of a reused id, or not ours: nothing to stop
            continue
        left.append(pgid)
    return left


def stop(running: dict[str, subprocess.Popen[bytes]], signals: Signals, grace: float = GRACE_S) -> list[int]:
    """SIGTERM every process group, wait up to ``grace`` s for them all to go (a further
    signal cuts the wait short), SIGKILL what is left. Returns the groups that survived."""
    seen = signals.received
    groups = signal_groups([proc.pid for proc in running.values()], signal.SIGTERM)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        if signals.wait(min(0.1, deadline - time.monotonic())) > seen:
            print("procs: asked again: killing what is left", flush=True)
            break
        reap_orphans(running)  # a group of zombies only still reads as alive
        groups = signal_groups(groups, 0)
    for pgid in signal_groups(groups, signal.SIGKILL):
        print(f"procs: process group {pgid} did not stop in time: killed", flush=True)
    end = time.monotonic() + 5
    while groups and time.monotonic() < end:
        reap_orphans(running)
        groups = signal_groups(groups, 0)
        time.sleep(0.05)
    return groups


def main(argv: list[str]) -> int:
    procs = read_procfile(Path(argv[1] if len(argv) > 1 else "deploy/Procfile"))
    signals = Signals()  # before any child exists: no window where a signal kills us alone
    become_subreaper()
    running = start(procs, signals)
    reported: set[str] = set()
    while not signals.wait(POLL_S):
        for name, proc in running.items():
            if proc.poll() is not None and name not in reported:
                reported.add(name)
                print(f"procs: {name} exited with code {proc.returncode}; the others keep running",
                      flush=True)
        reap_orphans(running)
        if len(reported) == len(running):
            break
    print("procs: stopping everything", flush=True)
    left = stop(running, signals)
    print("procs: stopped" if not left else f"procs: groups {left} still have processes", flush=True)
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
