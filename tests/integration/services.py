"""For fault tests: private Redis and Postgres servers (restarted, paused or wiped without
touching the shared ones other tests and people on this machine use), a whole cluster
started at once, and restarting one of its processes."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis
import requests

from tests.integration.stack import BIN, Stack, free_port, wait_until


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


def start_cluster(stack: Stack, *, agents: tuple[str, ...] = ("node-a", "node-b"), beat: bool = True,
                  **agent_env: str) -> dict[str, int]:
    """API, scheduler, the agents (fake GPUs: node-a 4×A100, node-b 2×H100) and beat,
    started together and waited for together; returns each agent's HTTP port."""
    stack.start("api", gunicorn(stack))
    stack.start("scheduler", stack.celery("worker", "-n", "scheduler@%h", "-Q", "jobs:queue",
                                          "-P", "threads", "-c", "1"))
    ports = {}
    for node in agents:
        ports[node] = start_agent(stack, node, **agent_env)
    if beat:
        stack.start_beat()
    wait_until(lambda: requests.get(f"{stack.api}/health", timeout=1).ok, timeout=30, what="the API")
    for name in ("scheduler", *agents):
        stack.wait_ready(name)
    return ports


def gunicorn(stack: Stack) -> list[str]:
    return [str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "--bind",
            f"127.0.0.1:{stack.api_port}", "--workers", "2", "web.app:create_app()"]


def start_agent(stack: Stack, node: str, **env: str) -> int:
    """Start node's agent without waiting for it; return its HTTP port."""
    port = free_port()
    stack.start(node, stack.celery("worker", "-n", f"{node}@%h", "-Q", f"assign:{node},overlay.heartbeat",
                                   "-P", "threads", "-c", "8"),
                NODE_NAME=node, AGENT_PORT=str(port), FAKE_GPUS="", NODE_LABELS="", **env)
    return port


def set_aside_log(stack: Stack, name: str) -> None:
    """Before restarting ``name``: move its log aside, so that readiness is read from the
    new process's own output (the old one is kept as ``<name>.<n>.log``)."""
    log = stack.workdir / f"{name}.log"
    n = 1
    while (stack.workdir / f"{name}.{n}.log").exists():
        n += 1
    if log.exists():
        log.rename(stack.workdir / f"{name}.{n}.log")
