"""`make dev` for real: it always stops, its output is quiet, and its Flower answers its REST API.

Every run starts the whole local stack (API, scheduler, beat, two agents, Flower) against the
test database and Redis DB, on free ports (API_BIND, AGENT_A_PORT, AGENT_B_PORT, FLOWER_PORT),
as its own process group, the way a terminal, `timeout` or an IDE's stop button runs it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.integration.harness import BIN, ROOT, free_port, wait_until

pytestmark = pytest.mark.slow

STOP_S = 20  # issue 13: every process of the stack is gone within 20 s of the signal
STACK = ("api", "scheduler", "beat", "agent-a", "agent-b", "flower")


@dataclass
class DevStack:
    """One `make dev` (or its procs.py alone) in a process group of its own."""

    proc: subprocess.Popen[bytes]
    out: Path
    ports: dict[str, int]
    seen_sessions: set[int] = field(default_factory=set)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def started(self) -> dict[str, int]:
        """procs.py's children: name -> pid, which is also their process group and session."""
        return {m[1]: int(m[2]) for m in re.finditer(r"procs: started (\S+) \(pid (\d+)\)", self.output())}

    def note_sessions(self) -> None:
        """Remember the sessions of every process under make (procs.py's children start their own)."""
        self.seen_sessions |= {stat[5] for stat in descendants(self.proc.pid)}

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def left_running(self) -> list[str]:
        """The stack's processes and ports still alive; [] once everything is gone."""
        self.note_sessions()
        groups = {self.proc.pid, *self.started().values(), *self.seen_sessions}
        left = [f"pid {pid} ({' '.join(stat[1:3])}) in group {stat[4]}, session {stat[5]}"
                for pid, stat in live_processes().items()
                if stat[4] in groups or stat[5] in groups]
        return left + [f"port {name} :{port}" for name, port in self.ports.items() if listening(port)]


def run_dev(tmp_path: Path, database_url: str, redis_url: str, *, via_make: bool, n: int,
            **env: str) -> DevStack:
    ports = {name: free_port() for name in ("api", "agent-a", "agent-b", "flower")}
    out = tmp_path / f"dev-{n}.log"
    environ = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "DATABASE_URL": database_url, "REDIS_URL": redis_url,
        "API_BIND": f"127.0.0.1:{ports['api']}", "AGENT_A_PORT": str(ports["agent-a"]),
        "AGENT_B_PORT": str(ports["agent-b"]), "FLOWER_PORT": str(ports["flower"]),
        "BEAT_SCHEDULE": str(tmp_path / f"beat-{n}"), "LOG_DIR": str(tmp_path / "joblogs"),
        "GPU_METRICS_MODE": "fake", "HEARTBEAT_INTERVAL_S": "1", "RECONCILE_INTERVAL_S": "1",
        "API_WORKERS": "1", "PROCS_GRACE_S": "10", **env,
    }
    for name in ("NODE_NAME", "LOG_LEVEL", "FLOWER_UNAUTHENTICATED_API", "MAKEFLAGS", "MFLAGS"):
        environ.pop(name, None)
    # `-o install`: the venv is the tests' own; make must not reinstall it on a newer setup.cfg.
    argv = (["make", "--no-print-directory", "-o", "install", "dev"] if via_make
            else [str(BIN / "python"), "deploy/procs.py", "deploy/Procfile"])
    with open(out, "wb") as sink:
        proc = subprocess.Popen(argv, cwd=ROOT, env=environ, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return DevStack(proc, out, ports)


@pytest.fixture
def dev(request, tmp_path, database_url, redis_url, sessions) -> Iterator:
    """``dev(via_make=..., n=...)`` starts a stack; whatever a failed test leaves is killed."""
    stacks: list[DevStack] = []

    def start(**kwargs) -> DevStack:
        stacks.append(run_dev(tmp_path, database_url, redis_url, **kwargs))
        return stacks[-1]

    yield start
    for s in stacks:
        if s.left_running():
            for pgid in {s.proc.pid, *s.started().values(), *s.seen_sessions}:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            print(f"----- {s.out.name} -----\n{s.output()[-8000:]}")
        if s.proc.poll() is None:
            s.proc.kill()
        s.proc.wait()


def stop_and_check(stack: DevStack, sig: int, *, twice: bool) -> None:
    stack.note_sessions()
    stack.signal(sig)
    if twice:
        time.sleep(0.02)
        stack.signal(sig)
    deadline = time.monotonic() + STOP_S
    while stack.proc.poll() is None or stack.left_running():
        assert time.monotonic() < deadline, (
            f"still running {STOP_S}s after {signal.Signals(sig).name}{' twice' if twice else ''}: "
            f"{stack.left_running()}\n{stack.output()[-6000:]}")
        time.sleep(0.1)
    print(f"{stack.out.name}: {signal.Signals(sig).name}{' x2' if twice else ''}: all gone in "
          f"{STOP_S - (deadline - time.monotonic()):.1f}s")


def wait_stack_ready(stack: DevStack) -> None:
    def ready() -> bool:
        assert stack.proc.poll() is None and " exited with code " not in stack.output(), \
            stack.output()[-6000:]
        nodes = requests.get(f"{stack.api}/api/nodes", timeout=2).json()
        names = {n["name"] for n in (nodes["nodes"] if isinstance(nodes, dict) else nodes)}
        return {"node-a", "node-b"} <= names and listening(stack.ports["flower"])

    wait_until(ready, timeout=90, what="the stack (API, both agents, Flower)", every=0.5)


# Runs: (via make, signal, sent twice, how long after the last process starts). None: full readiness.
RUNS = [
    (True, signal.SIGTERM, False, None),
    (True, signal.SIGINT, True, 0.0),
    (False, signal.SIGTERM, True, 0.5),
    (False, signal.SIGINT, False, 1.5),
    (True, signal.SIGTERM, True, 3.0),
    (False, signal.SIGINT, True, None),
    (False, signal.SIGTERM, False, 0.2),
    (True, signal.SIGINT, False, 2.0),
    (False, signal.SIGTERM, True, 1.0),
    (False, signal.SIGINT, True, 4.0),
]


def test_make_dev_always_stops_on_sigterm_or_sigint_sent_to_its_process_group(dev):
    for n, (via_make, sig, twice, after) in enumerate(RUNS):
        # Given make dev (or its procs.py) started, fully up or still starting
        stack = dev(via_make=via_make, n=n)
        wait_until(lambda s=stack: set(STACK) <= set(s.started()) or s.proc.poll() is not None,
                   timeout=60, what="procs.py to start every process")
        assert stack.proc.poll() is None, stack.output()[-6000:]
        if after is None:
            wait_stack_ready(stack)
        else:
            time.sleep(after)
        # When its whole process group gets SIGTERM or SIGINT, once or twice in quick succession
        # Then make, procs.py and every process of the stack are gone and the ports free
        stop_and_check(stack, sig, twice=twice)
        assert "procs: stopped" in stack.output(), stack.output()[-6000:]


QUIET_WINDOW_S = 20.0
NOISE = re.compile(r"heartbeat|reconcile|Sending due task|succeeded in|\] received|GET /", re.I)


def test_make_dev_shows_job_events_not_heartbeats_and_flower_answers_its_api(dev):
    # Given make dev, fully up, with heartbeat and reconcile every second (5x and 3x the default)
    stack = dev(via_make=True, n=0)
    wait_stack_ready(stack)
    # When one job runs through the API
    job = requests.post(f"{stack.api}/api/jobs", json={"job_id": "quiet-1", "cmd": ["echo", "hi"]},
                        timeout=10)
    assert job.status_code == 201, job.text
    wait_until(lambda: requests.get(f"{stack.api}/api/jobs/quiet-1", timeout=2).json()["state"] == "DONE",
               timeout=60, what="quiet-1 to be DONE")
    # and the stack runs on for a while
    mark = len(stack.output().splitlines())
    time.sleep(QUIET_WINDOW_S)
    lines = stack.output().splitlines()
    # Then the output has the start-up lines and the job's events, naming the job
    out = "\n".join(lines)
    for event in ("submitted", "placed on node-", "running on node-", "DONE on node-"):
        assert re.search(rf"job quiet-1 {event}", out), f"no 'job quiet-1 {event}' line in:\n{out[-6000:]}"
    assert "Listening at: http://127.0.0.1" in out and "registered" in out
    # and no more than a handful of lines a minute from heartbeats and reconciles
    noise = [line for line in lines[mark:] if NOISE.search(line)]
    print(f"{len(lines) - mark} lines in {QUIET_WINDOW_S:.0f}s after the job, {len(noise)} of them "
          "from heartbeats or reconciles")
    assert len(noise) * 60 / QUIET_WINDOW_S <= 6, "\n".join(noise[:40])
    # And Flower's REST API answers without a login on the local stack
    workers = requests.get(f"http://127.0.0.1:{stack.ports['flower']}/api/workers", timeout=10)
    assert workers.status_code == 200, workers.text
    stop_and_check(stack, signal.SIGTERM, twice=False)


def descendants(root: int) -> list[list]:
    """``/proc/<pid>/stat`` fields (pid, comm, state, ppid, pgrp, session) of root and its descendants."""
    procs = live_processes(include_zombies=True)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            found.append(procs[pid])
            todo.extend(p for p, stat in procs.items() if stat[3] == pid)
    return found


def live_processes(*, include_zombies: bool = False) -> dict[int, list]:
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        comm_end = text.rindex(")")
        rest = text[comm_end + 2:].split()
        state = rest[0]
        if state in ("Z", "X") and not include_zombies:
            continue  # exited: holds no port, runs nothing (an init that does not reap keeps it)
        stat = [int(entry), text[text.index("(") + 1:comm_end], state, int(rest[1]), int(rest[2]),
                int(rest[3])]
        procs[int(entry)] = stat
    return procs


def listening(port: int) -> bool:
    """Something listens on ``port`` (on 127.0.0.1 or every interface)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT left over is not a listener
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False
