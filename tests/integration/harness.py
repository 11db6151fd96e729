"""Everything the integration tests share: real overlay processes (gunicorn, the scheduler,
beat, agents) as a ``Stack``, private Redis and Postgres servers for fault tests, and the
API and database reads the tests assert on.

Each process runs as its own process group against the test database and the tests' Redis
DB, with its output in a file a failing test prints (conftest.py's ``output_on_failure``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from celery import Celery
from sqlalchemy import create_engine, select, text

from overlay.store import jobs as job_store
from overlay.store.tables import Base, GpuAllocationRow
from tests.conftest import TEST_REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TERMINAL = {"DONE", "FAILED", "CANCELLED"}
# How long reconcile waits before it re-sends a lost run_job (workers/scheduler.py).
RESEND_S = 10
# The labels the usual two-node cluster is started with.
ZONES = {"node-a": "zone=a", "node-b": "zone=b"}


# -- waiting and processes ----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], *, timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; raise AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:
            last_error = e
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The state follows the command name, which is in parentheses and may hold spaces.
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- the stack ----------------------------------------------------------------------------------

class Stack:
    """Starts and stops overlay's processes; ``api`` is the API's base URL."""

    def __init__(self, *, database_url: str, redis_url: str, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "LOG_DIR": str(workdir / "joblogs"),
            "HEARTBEAT_INTERVAL_S": "1",
            "RECONCILE_INTERVAL_S": "1",
            "NODE_TTL_S": "4",
            # A supervisor kills its job when its lease was not renewed for this long: below the TTL.
            "FENCE_S": "3",
            "STATE_DIR": str(workdir / "state"),
            "GPU_METRICS_MODE": "fake",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.env.pop("NODE_NAME", None)

    def start(self, name: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env={**self.env, **env}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def start_api(self, *, wait: bool = True) -> None:
        self.start("api", [str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py",
                           "--bind", f"127.0.0.1:{self.api_port}", "--workers", "2",
                           "web.app:create_app()"])
        if wait:
            self.wait_api()

    def wait_api(self) -> None:
        wait_until(lambda: requests.get(f"{self.api}/health", timeout=1).ok, timeout=30, what="the API")

    def start_scheduler(self, name: str = "scheduler", *, wait: bool = True) -> None:
        self.start(name, self.worker(name, "jobs:queue", concurrency=1))
        if wait:
            self.wait_ready(name)

    def start_beat(self) -> None:
        self.start("beat", self.celery("beat", "--schedule", str(self.workdir / "beat-schedule")))

    def start_agent(self, node: str, *, fake_gpus: str = "", labels: str = "", concurrency: int = 8,
                    wait: bool = True, **env: str) -> int:
        """Start node's agent (``concurrency`` worker threads: one less job slot); return its
        HTTP port, with ``wait`` once it has registered and serves /health."""
        port = free_port()
        self.start(
            node,
            self.worker(node, f"assign:{node},overlay.heartbeat", concurrency=concurrency),
            NODE_NAME=node, AGENT_PORT=str(port), FAKE_GPUS=fake_gpus, NODE_LABELS=labels, **env,
        )
        if wait:
            self.wait_agent(node, port)
        return port

    def wait_agent(self, node: str, port: int) -> None:
        """Until node's agent has registered and serves /health on ``port``."""
        self.wait_ready(node)
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok,
                   timeout=20, what=f"{node}'s /health")

    def start_cluster(self, *, agents: tuple[str, ...] = ("node-a", "node-b"), beat: bool = True,
                      labels: Mapping[str, str] | None = None, **agent_env: str) -> dict[str, int]:
        """API, scheduler, the agents (fake GPUs: node-a 4×A100, node-b 2×H100; ``labels``
        by node) and beat, started together and waited for together; returns each agent's
        HTTP port."""
        self.start_api(wait=False)
        self.start_scheduler(wait=False)
        ports = {node: self.start_agent(node, labels=(labels or {}).get(node, ""), wait=False, **agent_env)
                 for node in agents}
        if beat:
            self.start_beat()
        self.wait_api()
        self.wait_ready("scheduler")
        for node, port in ports.items():
            self.wait_agent(node, port)
        return ports

    def celery(self, *args: str) -> list[str]:
        return [str(BIN / "celery"), "-A", "workers.app", *args, "--loglevel", "INFO"]

    def worker(self, name: str, queues: str, *, concurrency: int) -> list[str]:
        """A worker as deploy/Procfile starts one: no gossip, no mingle (its second of
        waiting for neighbours at start, for revokes overlay does not use)."""
        return self.celery("worker", "-n", f"{name}@%h", "-Q", queues, "-P", "threads",
                           "-c", str(concurrency), "--without-gossip", "--without-mingle")

    def wait_ready(self, name: str, timeout: float = 30) -> None:
        wait_until(lambda: b" ready." in self.output(name).encode() or self.dead(name),
                   timeout=timeout, what=f"{name} to be ready")
        assert not self.dead(name), f"{name} died:\n{self.output(name)}"

    def set_aside_log(self, name: str) -> None:
        """Before restarting ``name``: move its log aside, so that readiness is read from the
        new process's own output (the old one is kept as ``<name>.<n>.log``)."""
        log = self.workdir / f"{name}.log"
        n = 1
        while (self.workdir / f"{name}.{n}.log").exists():
            n += 1
        if log.exists():
            log.rename(self.workdir / f"{name}.{n}.log")

    def dead(self, name: str) -> bool:
        return self.procs[name].poll() is not None

    def output(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        """Kill every process of the stack at once (a SIGTERM'd gunicorn takes ~2 s to drain
        its idle keep-alive connections, at every test's end; the graceful stops have tests of
        their own: test_graceful_stop.py)."""
        for name in list(self.procs):
            if not self.dead(name):
                self.kill(name, signal.SIGKILL)

    def all_output(self) -> str:
        return "\n".join(f"----- {name} -----\n{self.output(name)[-6000:]}" for name in self.procs)


def shared_stack(database_url: str, workdir: Path, **env: str) -> Iterator[Stack]:
    """One running two-node stack for a whole test module (``env`` added to its processes');
    afterwards stop it and leave the database and broker empty.

    Starting the processes takes seconds, so modules whose tests only read or add jobs share
    one. Tests in such a module must not use the ``sessions`` or ``redis_url`` fixtures:
    their teardown empties the tables and flushes the broker under the running processes.
    """
    redis_url = TEST_REDIS_URL
    broker = redis.Redis.from_url(redis_url)
    broker.flushdb()
    # A loaded test machine can delay a heartbeat past the usual 4 s; these tests are not about that.
    stack = Stack(database_url=database_url, redis_url=redis_url, workdir=workdir,
                  **{"NODE_TTL_S": "30", "FENCE_S": "20", **env})
    failed = True
    try:
        stack.start_cluster(labels=ZONES)
        failed = False
        yield stack
    finally:
        stack.stop_all()
        if failed:
            print(stack.all_output())
        empty_tables(database_url)
        broker.flushdb()
        broker.close()


def empty_tables(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"truncate {', '.join(t.name for t in Base.metadata.sorted_tables)} cascade"))
    finally:
        engine.dispose()


# -- private servers for fault tests ------------------------------------------------------------

class PrivateRedis:
    """A redis-server of its own on a free port, without persistence: a restart loses all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.workdir / "redis-server.log", "ab") as out:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_until(lambda: self.client().ping(), timeout=10, what="the private redis-server")

    def kill(self) -> None:
        """SIGKILL: everything in it is gone, every client loses its connection."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)


class PrivatePostgres:
    """A Postgres cluster of its own (initdb as user postgres) on a free port."""

    def __init__(self) -> None:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if os.geteuid() != 0 or not binaries:
            pytest.skip("a private Postgres cluster needs root and /usr/lib/postgresql/*/bin")
        self.bin = Path(binaries[-1]).parent
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="overlay-pg-"))
        self.data = self.root / "data"
        self.server = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}"
        postgres = pwd.getpwnam("postgres")
        os.chown(self.root, postgres.pw_uid, postgres.pw_gid)
        self._as_postgres("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                          "--no-sync", "-E", "UTF8")

    def _as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
                       check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                          "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop at once, as a crash would: connections drop, nothing waits."""
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        pidfile = self.data / "postmaster.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGQUIT)
            except (ProcessLookupError, ValueError):
                pass
            deadline = time.monotonic() + 10
            while pidfile.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)


# -- what the API says --------------------------------------------------------------------------

def submit(stack: Stack, **body: Any) -> dict[str, Any]:
    response = requests.post(f"{stack.api}/api/jobs", json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def job(stack: Stack, job_id: str) -> dict[str, Any]:
    response = requests.get(f"{stack.api}/api/jobs/{job_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def wait_state(stack: Stack, job_id: str, states: set[str], timeout: float = 30) -> dict[str, Any]:
    return wait_until(lambda: (j := job(stack, job_id))["state"] in states and j,  # type: ignore[no-any-return]
                      timeout=timeout, what=f"{job_id} to reach {states}")


def logs(stack: Stack, job_id: str) -> str:
    return requests.get(f"{stack.api}/api/jobs/{job_id}/logs", timeout=10).text


def nodes(stack: Stack, query: str = "") -> dict[str, dict[str, Any]]:
    """The API's nodes by name (``query`` e.g. ``?include=offline``)."""
    body = requests.get(f"{stack.api}/api/nodes{query}", timeout=5).json()
    return {n["name"]: n for n in body["nodes"]}


def send_run_job(redis_url: str, node: str, job_id: str, attempt: int) -> None:
    """A run_job as the scheduler sends it, e.g. a late one for a dead attempt."""
    client = Celery("fault-test", broker=redis_url)
    client.config_from_object("celeryconfig")
    client.send_task("overlay.run_job", args=[job_id, attempt], queue=f"assign:{node}")
    client.close()


# -- what Postgres says -------------------------------------------------------------------------

def events(sessions, job_id: str) -> list[tuple[str, int, str | None]]:
    """The job's events as (state, attempt, reason)."""
    with sessions() as s:
        return [(e.to_state, e.attempt, e.reason) for e in job_store.events(s, job_id)]


def run_count(sessions, job_id: str) -> int:
    return sum(1 for state, _, _ in events(sessions, job_id) if state == "RUNNING")


def allocations(sessions, node: str) -> list[tuple[int, str]]:
    """The GPUs of ``node`` held now, as (index, job_id)."""
    with sessions() as s:
        rows = s.scalars(select(GpuAllocationRow).where(GpuAllocationRow.node == node))
        return [(a.gpu_index, a.job_id) for a in rows]


def assert_no_gpu_double_booked(sessions, ids: list[str]) -> None:
    """From the job events: no two [PLACED, end] intervals on one (node, GPU) overlap.

    Intervals are in event-id order, the order the transactions wrote them in; the
    clock times are read before each transaction takes its locks.
    """
    holds: list[tuple[str, int, int, int]] = []
    with sessions() as s:
        for job_id in ids:
            evs = job_store.events(s, job_id)
            placed = next(e for e in evs if e.to_state == "PLACED")
            end = next(e for e in evs if e.to_state in TERMINAL)
            holds += [(placed.node, g, placed.id, end.id) for g in placed.gpu_indices]
    for i, (node, gpu, start, end) in enumerate(holds):
        for node2, gpu2, start2, end2 in holds[i + 1:]:
            if (node, gpu) == (node2, gpu2):
                assert end <= start2 or end2 <= start, f"{node} GPU {gpu} double-booked"


# A gang's parts meet: rank 0 listens at MASTER_ADDR:MASTER_PORT, the others connect (retrying
# until rank 0 is up); each prints what it was given, the network namespace it runs in, and
# the other's rank.
GANG_RENDEZVOUS = r"""
import os, socket, time
rank, world = int(os.environ["NODE_RANK"]), int(os.environ["WORLD_SIZE"])
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
print(f"rank {rank} of {world} nnodes={os.environ['NNODES']} gpus_per_node={os.environ['GPUS_PER_NODE']} "
      f"master={addr}:{port}", flush=True)
print(f"rank {rank} ns={os.readlink('/proc/self/ns/net')}", flush=True)
if rank == 0:
    server = socket.create_server(("", port))
    server.settimeout(60)
    conn, _ = server.accept()
else:
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
with conn:
    conn.sendall(str(rank).encode())
    print(f"rank {rank} met rank {conn.recv(16).decode()}", flush=True)
"""
