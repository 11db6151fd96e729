"""The `overlay` CLI against a running API, scheduler and agents, over real HTTP.

Most tests run the installed entry point as a subprocess, as a user would; a few
use click's CliRunner in-process where only the output matters.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from cli.main import main
from tests.integration.harness import BIN, ROOT, Stack, free_port, job, shared_stack, wait_until

pytestmark = pytest.mark.slow
OVERLAY = str(BIN / "overlay")


@pytest.fixture(scope="module")
def cluster(database_url, tmp_path_factory) -> Iterator[Stack]:
    yield from shared_stack(database_url, tmp_path_factory.mktemp("cli-stack"))


def overlay(stack: Stack | str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    api = stack if isinstance(stack, str) else stack.api
    return subprocess.run([OVERLAY, "--api", api, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def gated_job(stack: Stack, job_id: str, gate: Path, **body) -> None:
    """A job that prints `one`, waits for ``gate`` to exist, prints `two` and ends."""
    script = f"echo one; while [ ! -e {gate} ]; do sleep 0.05; done; echo two"
    r = requests.post(f"{stack.api}/api/jobs", json={"job_id": job_id, "cmd": ["sh", "-c", script], **body},
                      timeout=10)
    assert r.status_code == 201, r.text


def test_submit_wait_shows_progress_and_exits_with_the_jobs_status(cluster):
    # When a one-GPU job is submitted with --wait
    done = overlay(cluster, "submit", "--gpus", "1", "--job-id", "cli-ok", "--wait",
                   "--", "sh", "-c", "echo CVD=$CUDA_VISIBLE_DEVICES")
    # Then it exits 0 having shown the states it went through
    assert done.returncode == 0, done.stderr
    assert "cli-ok QUEUED" in done.stderr and "cli-ok DONE (exit 0)" in done.stderr
    # And a job that exits 3 makes the CLI exit 3
    failed = overlay(cluster, "submit", "--job-id", "cli-three", "--wait", "--", "sh", "-c", "exit 3")
    assert failed.returncode == 3, failed.stderr
    assert "cli-three FAILED (exit 3)" in failed.stderr


def test_submit_sends_every_option_to_the_api(cluster):
    submitted = overlay(cluster, "submit", "--json", "--gpus", "2", "--gpu-memory", "40G",
                        "--gpu-model", "a100", "--label", "zone=a", "--priority", "7", "--timeout", "1h",
                        "--env", "EPOCHS=3", "--max-retries", "1", "--job-id", "cli-opts",
                        "python", "train.py", "--epochs", "3")
    assert submitted.returncode == 0, submitted.stderr
    request = json.loads(submitted.stdout)["request"]
    assert request == {**request, "cmd": ["python", "train.py", "--epochs", "3"], "gpus": 2,
                       "gpu_memory_mb": 40960, "gpu_model": "a100", "node_selector": {"zone": "a"},
                       "priority": 7, "timeout_s": 3600, "max_retries": 1, "env": {"EPOCHS": "***"}}


def test_logs_follow_prints_output_as_it_comes_until_the_job_ends(cluster, tmp_path):
    # Given a running job that has printed `one` and waits on a gate
    gate = tmp_path / "gate"
    gated_job(cluster, "cli-follow", gate)
    argv = [OVERLAY, "--api", cluster.api, "logs", "--follow", "cli-follow"]
    lines: list[str] = []
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with subprocess.Popen(argv, cwd=ROOT, **pipes) as follower:  # type: ignore[call-overload]
        read = lambda: lines.extend(iter(follower.stdout.readline, ""))  # noqa: E731
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            # When the follower has shown `one`
            wait_until(lambda: "one\n" in lines, timeout=60, what="the follower to print `one`")
            # Then it is still following the unfinished job, and `two` comes once the job goes on
            assert follower.poll() is None and job(cluster, "cli-follow")["state"] == "RUNNING"
            gate.touch()
            follower.wait(timeout=60)
            reader.join(timeout=10)
        finally:
            gate.touch()
            if follower.poll() is None:
                follower.kill()
        err = follower.stderr.read()  # type: ignore[union-attr]
    assert follower.returncode == 0, err
    assert [line for line in lines if not line.startswith("===")] == ["one\n", "two\n"]
    assert "cli-follow DONE (exit 0)" in err


def test_logs_prints_a_finished_jobs_output(cluster):
    overlay(cluster, "submit", "--job-id", "cli-logs", "--wait", "--", "sh", "-c", "printf 'a\\nb\\n'")
    shown = overlay(cluster, "logs", "cli-logs")
    assert shown.returncode == 0
    assert shown.stdout.splitlines()[-2:] == ["a", "b"]


def test_nodes_draws_each_gpu_with_bars_and_the_job_holding_it(cluster, tmp_path):
    # Given a job holding one of node-a's GPUs
    gate = tmp_path / "gate"
    gated_job(cluster, "cli-holder", gate, gpus=1, node_selector={"zone": "a"})
    try:
        wait_until(lambda: job(cluster, "cli-holder")["state"] == "RUNNING", timeout=60,
                   what="cli-holder to run")
        shown = overlay(cluster, "nodes", "--ascii")
    finally:
        gate.touch()
    assert shown.returncode == 0, shown.stderr
    block = shown.stdout.split("\n\n")
    node_a = next(b for b in block if b.startswith("node-a"))
    rows = [line for line in node_a.splitlines()[2:] if "A100" in line]
    assert len(rows) == 4  # node-a's four fake A100s
    assert all("%" in r and "[" in r for r in rows)
    assert [r.split()[-1] for r in rows].count("cli-holder") == 1
    as_json = json.loads(overlay(cluster, "nodes", "--json").stdout)
    assert {n["name"] for n in as_json["nodes"]} == {"node-a", "node-b"}


def test_status_list_cancel_and_policies(cluster, tmp_path):
    gated_job(cluster, "cli-cancel", tmp_path / "never")
    wait_until(lambda: job(cluster, "cli-cancel")["state"] == "RUNNING", timeout=60, what="cli-cancel to run")
    runner = CliRunner()
    api = ["--api", cluster.api]
    listed = runner.invoke(main, [*api, "list", "--state", "running", "--json"])
    assert "cli-cancel" in {j["job_id"] for j in json.loads(listed.output)["jobs"]}
    assert runner.invoke(main, [*api, "cancel", "cli-cancel"]).output == "cancelled cli-cancel\n"
    status = runner.invoke(main, [*api, "status", "cli-cancel"]).output
    assert "state     CANCELLED" in status and "cli-cancel" in status
    table = runner.invoke(main, [*api, "list", "--limit", "5"]).output
    assert table.splitlines()[0].split() == ["JOB", "STATE", "WHERE", "AGE", "REASON"]
    policies = runner.invoke(main, [*api, "policies"]).output
    assert policies.startswith("* first-fit")


def test_a_4xx_prints_the_apis_message_and_field_errors(cluster):
    # A field error: the field and the API's reason, exit 1
    refused = overlay(cluster, "submit", "--env", "1BAD=x", "--", "true")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == ["overlay: the API refused the request (422 Unprocessable Entity):",
                                           "  env.1BAD.key: not a valid variable name"]
    no_gpus = overlay(cluster, "submit", "--gpu-model", "a100", "--", "true")
    assert no_gpus.returncode == 1
    assert no_gpus.stderr.splitlines()[1:] == ["  gpus: gpu_memory_mb and gpu_model need gpus >= 1"]
    # A 404 and a 409 say what the API said
    missing = overlay(cluster, "status", "no-such-job")
    assert missing.returncode == 1
    assert missing.stderr == "overlay: job 'no-such-job' does not exist (404 Not Found)\n"
    overlay(cluster, "submit", "--job-id", "cli-twice", "--", "true")
    again = overlay(cluster, "submit", "--job-id", "cli-twice", "--", "true")
    assert again.returncode == 1
    assert again.stderr == "overlay: job 'cli-twice' already exists (409 Conflict)\n"


def test_a_bad_api_address_is_one_plain_line_and_exit_2():
    port = free_port()  # nothing listens there
    result = overlay(f"http://127.0.0.1:{port}", "list")
    assert result.returncode == 2
    assert result.stderr == (
        f"overlay: cannot reach the overlay API at http://127.0.0.1:{port}: connection refused\n")
    assert result.stdout == ""


class Recorder(BaseHTTPRequestHandler):
    """An API stand-in that records headers and answers as a broken proxy might."""

    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        Recorder.seen.append(dict(self.headers))
        if self.path.startswith("/api/policies"):
            self.reply(200, b'{"active": "first-fit", "supported": ["first-fit"]}', "application/json")
        else:
            self.reply(502, b"<html><body>Bad Gateway</body></html>", "text/html")

    def reply(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_token_is_sent_as_a_bearer_and_a_non_json_error_is_summarised(stand_in):
    runner = CliRunner()
    ok = runner.invoke(main, ["--api", stand_in, "policies"], env={"OVERLAY_API_TOKEN": "s3cret"})
    assert ok.exit_code == 0 and Recorder.seen[-1]["Authorization"] == "Bearer s3cret"
    bad = overlay(stand_in, "list")
    assert bad.returncode == 1
    assert bad.stderr == "overlay: the API answered 502 Bad Gateway: <html><body>Bad Gateway</body></html>\n"


def test_the_cli_imports_none_of_the_server_side():
    heavy = {"flask", "celery", "sqlalchemy", "marshmallow", "kombu", "psycopg2", "redis", "web", "workers"}
    code = f"import sys, cli.main; print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            check=True)
    assert loaded.stdout.strip() == "[]"
