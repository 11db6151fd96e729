"""Watching a real stack: celery inspect, Flower, /metrics, JSON logs, and the dashboard in Chromium.

The stack here logs with LOG_FORMAT=json, so its own output is the evidence for the
structured-logging tests.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import BIN, ROOT, Stack, free_port, job, shared_stack, wait_until

pytestmark = pytest.mark.slow
FLOWER_AUTH = ("watcher", "s3cret-pw")


@pytest.fixture(scope="module")
def cluster(database_url, tmp_path_factory) -> Iterator[Stack]:
    yield from shared_stack(database_url, tmp_path_factory.mktemp("obs-stack"), LOG_FORMAT="json")


def run_gated(stack: Stack, job_id: str, gate: Path, **body) -> None:
    """Submit a job that runs until ``gate`` exists, and wait until it runs."""
    script = f"while [ ! -e {gate} ]; do sleep 0.05; done; echo released"
    r = requests.post(f"{stack.api}/api/jobs", json={"job_id": job_id, "cmd": ["sh", "-c", script], **body},
                      timeout=10)
    assert r.status_code == 201, r.text
    wait_until(lambda: job(stack, job_id)["state"] == "RUNNING", timeout=60, what=f"{job_id} to run")


def celery(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "celery"), "-A", "workers.app", *args], env=stack.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_celery_inspect_ping_names_both_nodes(cluster):
    def both_answer() -> bool:
        out = celery(cluster, "inspect", "ping", "--timeout", "3").stdout
        return "node-a@" in out and "node-b@" in out

    wait_until(both_answer, timeout=90, what="node-a and node-b to answer `celery inspect ping`", every=1)


def test_celery_inspect_active_shows_which_job_runs_where(cluster, tmp_path):
    gate = tmp_path / "gate"
    try:
        run_gated(cluster, "obs-active", gate, node_selector={"zone": "b"})

        def on_node_b() -> list:
            # Naming the destination lets inspect return as soon as node-b has answered
            out = celery(cluster, "inspect", "active", "--json", "--timeout", "10",
                         "--destination", f"node-b@{socket.gethostname()}").stdout
            active = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
            return [t for worker, tasks in active.items() if worker.startswith("node-b@")
                    for t in tasks if t["name"] == "overlay.run_job" and t["args"][0] == "obs-active"]

        tasks = wait_until(on_node_b, timeout=90, what="node-b to report obs-active as active", every=1)
        assert tasks[0]["args"] == ["obs-active", 1]
    finally:
        gate.touch()


def test_flower_asks_for_its_password_and_shows_both_agents_and_the_jobs(cluster, tmp_path):
    # Given Flower started with FLOWER_BASIC_AUTH, as the Procfile and compose pass it through
    port = free_port()
    cluster.start("flower", [str(BIN / "celery"), "-A", "workers.app", "flower", f"--port={port}",
                             "--address=127.0.0.1"], FLOWER_BASIC_AUTH=":".join(FLOWER_AUTH))
    flower = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{flower}/healthcheck", timeout=2).ok, timeout=60, what="Flower")
    # Then without the password nothing is shown
    assert requests.get(f"{flower}/", timeout=10).status_code == 401
    assert requests.get(f"{flower}/", auth=("watcher", "wrong"), timeout=10).status_code == 401

    # And with it, both agents are listed as workers
    def workers() -> set[str]:
        r = requests.get(f"{flower}/api/workers", params={"refresh": "1"}, auth=FLOWER_AUTH, timeout=30)
        return {name.split("@")[0] for name in r.json()} if r.ok else set()

    wait_until(lambda: workers() >= {"node-a", "node-b"}, timeout=90, what="Flower to list both agents",
               every=1)
    # And a job run now appears in its task list with its job id readable
    requests.post(f"{cluster.api}/api/jobs", json={"job_id": "obs-flower", "cmd": ["true"]}, timeout=10)

    def run_job_task() -> list:
        r = requests.get(f"{flower}/api/tasks", params={"taskname": "overlay.run_job"}, auth=FLOWER_AUTH,
                         timeout=10)
        return [t for t in r.json().values() if "obs-flower" in str(t.get("args"))] if r.ok else []

    task = wait_until(run_job_task, timeout=90, what="Flower to show obs-flower's run_job", every=1)[0]
    assert task["args"] == "job_id='obs-flower', attempt=1"
    assert task["worker"].startswith("node-")


def test_metrics_from_the_real_api_parse_and_count_the_fleet(cluster):
    text = requests.get(f"{cluster.api}/metrics", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    gpus = {s.labels["node"]: s.value for s in families["overlay_gpus"].samples}
    assert gpus == {"node-a": 4, "node-b": 2}
    online = [s.value for s in families["overlay_nodes"].samples if s.labels["state"] == "online"]
    assert online == [2]


def json_lines(text: str) -> list[dict]:
    """The lines that are JSON objects (Celery's start-up banner is printed, not logged)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_logs_carry_job_id_and_node_on_every_job_event(cluster):
    # Given a job that ran to its end on the stack that logs JSON
    requests.post(f"{cluster.api}/api/jobs", json={"job_id": "obs-logs", "cmd": ["true"], "gpus": 1},
                  timeout=10)
    wait_until(lambda: job(cluster, "obs-logs")["state"] == "DONE", timeout=60, what="obs-logs to finish")
    node = job(cluster, "obs-logs")["node"]

    def events() -> dict[str, dict]:
        lines = [e for name in ("api", "scheduler", node) for e in json_lines(cluster.output(name))]
        return {e["state"]: e for e in lines if e.get("job_id") == "obs-logs" and "state" in e}

    # Then each of its events is one JSON line naming the job, its node once placed, and the state
    seen = wait_until(lambda: (e := events()).keys() >= {"QUEUED", "PLACED", "RUNNING", "DONE"} and e,
                      timeout=30, what="a JSON log line for each of obs-logs' events")
    assert seen["QUEUED"]["node"] is None
    assert {seen[s]["node"] for s in ("PLACED", "RUNNING", "DONE")} == {node}
    assert seen["DONE"]["exit_code"] == 0 and seen["PLACED"]["gpus"] == job(cluster, "obs-logs")["gpus"]
    # And everything the API logged is JSON (gunicorn's own lines too; its access log is
    # written only at LOG_LEVEL=DEBUG, as JSON as well: tests/unit/test_logfmt_quiet.py)
    api_lines = [line for line in cluster.output("api").splitlines() if line.strip()]
    assert api_lines and all(json.loads(line) for line in api_lines)
    assert any(json.loads(line).get("logger", "").startswith("gunicorn") for line in api_lines)


class GpuRows(HTMLParser):
    """Collects the text of every element with a ``data-gpu`` attribute, by that attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, str] = {}
        self.open: list[tuple[str | None, int]] = []  # (data-gpu of the row being read, depth)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        gpu = dict(attrs).get("data-gpu")
        if gpu:
            self.rows[gpu] = ""
        current = self.open[-1][0] if self.open else None
        self.open.append((gpu or current, len(self.open)))

    def handle_endtag(self, tag: str) -> None:
        if self.open:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        if self.open and self.open[-1][0]:
            self.rows[self.open[-1][0]] += data


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")


def dump_dom(browser: str, url: str, profile: Path) -> str:
    argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout


def test_the_dashboard_in_headless_chromium_shows_node_as_gpus_and_their_holder(cluster, tmp_path):
    browser = chromium()
    gate = tmp_path / "gate"
    try:
        # Given a job holding one of node-a's GPUs
        run_gated(cluster, "obs-dash", gate, gpus=1, node_selector={"zone": "a"})

        # When the dashboard is loaded in a real browser and its script has run
        def rows() -> dict[str, str]:
            parser = GpuRows()
            parser.feed(dump_dom(browser, f"{cluster.api}/", tmp_path / "profile"))
            return parser.rows if any(k.startswith("node-a/") for k in parser.rows) else {}

        shown = wait_until(rows, timeout=180, what="the dashboard to show node-a's GPUs", every=1)
    finally:
        gate.touch()
    # Then each of node-a's four GPUs has its row with utilization and memory, one held by the job
    node_a = {k: v for k, v in shown.items() if k.startswith("node-a/")}
    assert sorted(node_a) == ["node-a/0", "node-a/1", "node-a/2", "node-a/3"]
    assert all("util" in text and "GiB" in text for text in node_a.values())
    holders = [k for k, text in node_a.items() if "obs-dash" in text]
    assert holders == [f"node-a/{job(cluster, 'obs-dash')['gpus'][0]}"]
    assert {k for k in shown if k.startswith("node-b/")} == {"node-b/0", "node-b/1"}
