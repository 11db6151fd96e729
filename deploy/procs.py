"""Runs every process of a Procfile in the foreground with its output prefixed by name.

Unlike honcho and foreman, a process that dies does not take the others down: kill
node-a's agent and the rest of the local stack keeps running, as on a real cluster.
Ctrl-C (or SIGTERM) stops them all.

    python deploy/procs.py deploy/Procfile
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

COLOURS = ("36", "33", "32", "35", "34", "31", "96", "93")


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


def start(procs: dict[str, str]) -> dict[str, subprocess.Popen[bytes]]:
    width = max(map(len, procs))
    running = {}
    for i, (name, command) in enumerate(procs.items()):
        proc = subprocess.Popen(
            ["sh", "-c", f"exec {command}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=pump, args=(name, COLOURS[i % len(COLOURS)], width, proc.stdout,
                                            sys.stdout), daemon=True).start()
        print(f"procs: started {name} (pid {proc.pid}): {shlex.split(command)[0]} ...", flush=True)
        running[name] = proc
    return running


def stop(running: dict[str, subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    for proc in running.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in running.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    procs = read_procfile(Path(argv[1] if len(argv) > 1 else "deploy/Procfile"))
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    running = start(procs)
    reported: set[str] = set()
    while not stopping.wait(0.5):
        for name, proc in running.items():
            if proc.poll() is not None and name not in reported:
                reported.add(name)
                print(f"procs: {name} exited with code {proc.returncode}; the others keep running",
                      flush=True)
        if len(reported) == len(running):
            break
    print("procs: stopping everything", flush=True)
    stop(running)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
