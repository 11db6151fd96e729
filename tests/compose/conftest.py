"""A private Docker engine and the compose stack `make up` starts on it.

In CI (CI=true) a machine without what the engine needs fails the tests, naming what
is missing; elsewhere they are skipped with the same message.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.compose.engine import PrivateEngine, missing_tools
from tests.compose.standins import build_standins

ROOT = Path(__file__).resolve().parents[2]
ENV_FILE = ROOT / "deploy/.env"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def say(request) -> Callable[[str], None]:
    """Print a line in pytest's output as it happens (not captured)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def write(line: str) -> None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"compose: {line}")

    return write


@pytest.fixture(scope="session")
def engine(say) -> Iterator[PrivateEngine]:
    missing = missing_tools()
    if missing:
        message = "the compose test needs " + "; ".join(missing)
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="overlay-compose-", dir="/var/tmp"))
    private = PrivateEngine(root)
    try:
        private.start()
        say(f"private dockerd (pid {private.process.pid if private.process else '?'}) on {private.socket}, "
            f"bridge {private.bridge}")
        yield private
    finally:
        started = time.monotonic()
        private.stop()
        stopped = time.monotonic()
        shutil.rmtree(root, ignore_errors=True)
        say(f"private dockerd stopped in {stopped - started:.0f}s, iptables and IP forwarding put back; "
            f"its data root removed in {time.monotonic() - stopped:.0f}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True, kw_only=True)
class Stack:
    """The running stack: how to reach it and what deploy/.env holds."""

    env: dict[str, str]
    ports: dict[str, int]
    secrets: dict[str, str]
    up_output: str

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`docker compose -f deploy/docker-compose.yml ...` as the seed's notes write it."""
        return subprocess.run(["docker", "compose", "-f", "deploy/docker-compose.yml", *args], cwd=ROOT,
                              env=self.env, capture_output=True, text=True, check=check, timeout=120)

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, check=True,
                              timeout=300)

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def api(self, method: str, path: str, body: dict[str, Any] | None = None,
            token: str | None = None) -> tuple[int, Any]:
        """(status, JSON body) of an API call, with the API token unless told otherwise."""
        headers = {"Content-Type": "application/json",
                   "Authorization": f"Bearer {self.secrets['OVERLAY_API_TOKEN'] if token is None else token}"}
        request = urllib.request.Request(self.url("api", path), method=method, headers=headers,
                                         data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 90) -> Any:
    """check()'s first truthy value; fails naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except (OSError, urllib.error.URLError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s}s")
        time.sleep(1)


def read_env_file() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}


@pytest.fixture(scope="module")
def stack(engine, say) -> Iterator[Stack]:
    """`make up` on the private engine (base images pulled, or stand-ins made), `make down` after."""
    made = build_standins(engine.env(), say)
    if made:
        say(f"the stack runs on stand-ins for {', '.join(made)}; the overlay image is built from the "
            "python stand-in, which carries this host's CA bundle and pip settings")
    ports = {name: free_port() for name in ("api", "agent-a", "agent-b", "flower")}
    env = {**engine.env(), "OVERLAY_PUBLISH_ADDR": "127.0.0.1",
           "OVERLAY_API_PORT": str(ports["api"]), "OVERLAY_AGENT_A_PORT": str(ports["agent-a"]),
           "OVERLAY_AGENT_B_PORT": str(ports["agent-b"]), "OVERLAY_FLOWER_PORT": str(ports["flower"])}
    created_env_file = not ENV_FILE.exists()
    started = time.monotonic()
    # HAS_GPU= : the agents report fake GPUs even on a GPU host (the private engine has no
    # NVIDIA runtime); tests/unit/test_deploy_gpus.py checks the GPU split.
    up = subprocess.run(["make", "up", "HAS_GPU="], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)
    say(f"make up: exit {up.returncode} in {time.monotonic() - started:.0f}s")
    try:
        if up.returncode != 0:
            logs = subprocess.run(["docker", "compose", "-f", "deploy/docker-compose.yml", "logs",
                                   "--no-color", "--tail", "40", "api", "postgres", "redis"],
                                  cwd=ROOT, env=env, capture_output=True, text=True).stdout
            pytest.fail(f"make up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}\n{logs[-8000:]}")
        yield Stack(env=env, ports=ports, secrets=read_env_file(), up_output=up.stdout)
    finally:
        subprocess.run(["make", "down", "HAS_GPU="], cwd=ROOT, env=env, capture_output=True, timeout=300)
        if created_env_file:
            ENV_FILE.unlink(missing_ok=True)
