"""Real overlay processes for integration tests: gunicorn, the scheduler, beat, agents.

Each runs as its own process group against the test database and the tests' Redis
DB, with its output in a file the failing test prints.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


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

    def start_api(self) -> None:
        self.start("api", [str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py",
                           "--bind", f"127.0.0.1:{self.api_port}", "--workers", "2",
                           "web.app:create_app()"])
        wait_until(lambda: requests.get(f"{self.api}/health", timeout=1).ok, timeout=30, what="the API")

    def start_scheduler(self, name: str = "scheduler") -> None:
        self.start(name, self.celery("worker", "-n", f"{name}@%h", "-Q", "jobs:queue",
                                     "-P", "threads", "-c", "1"))
        self.wait_ready(name)

    def start_beat(self) -> None:
        self.start("beat", self.celery("beat", "--schedule", str(self.workdir / "beat-schedule")))

    def start_agent(self, node: str, *, fake_gpus: str = "", labels: str = "", concurrency: int = 8,
                    **env: str) -> int:
        """Start node's agent (``concurrency`` worker threads: one less job slot); return its
        HTTP port once it has registered."""
        port = free_port()
        self.start(
            node,
            self.celery("worker", "-n", f"{node}@%h", "-Q", f"assign:{node},overlay.heartbeat",
                        "-P", "threads", "-c", str(concurrency)),
            NODE_NAME=node, AGENT_PORT=str(port), FAKE_GPUS=fake_gpus, NODE_LABELS=labels, **env,
        )
        self.wait_ready(node)
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok,
                   timeout=20, what=f"{node}'s /health")
        return port

    def celery(self, *args: str) -> list[str]:
        return [str(BIN / "celery"), "-A", "workers.app", *args, "--loglevel", "INFO"]

    def wait_ready(self, name: str, timeout: float = 30) -> None:
        wait_until(lambda: b" ready." in self.output(name).encode() or self.dead(name),
                   timeout=timeout, what=f"{name} to be ready")
        assert not self.dead(name), f"{name} died:\n{self.output(name)}"

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
        for name in list(self.procs):
            if not self.dead(name):
                self.kill(name, signal.SIGTERM if name == "api" else signal.SIGKILL)

    def all_output(self) -> str:
        return "\n".join(f"----- {name} -----\n{self.output(name)[-6000:]}" for name in self.procs)
