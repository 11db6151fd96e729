"""The CLI's array and dependency options become the API's fields; an array reads as one line."""

from __future__ import annotations

from click.testing import CliRunner

from cli.arrays import summary
from cli.client import CliError
from cli.main import depends_on, main


def test_after_options_become_depends_on():
    assert depends_on(("train-1,prep",), ("clean",), ()) == {"afterok": ["train-1", "prep"],
                                                              "afterany": ["clean"]}
    assert depends_on((), (), ()) is None


def test_an_array_in_one_line():
    array = {"array_id": "sweep", "size": 100, "expression": "0-99%10", "max_running": 10,
             "counts": {"QUEUED": 90, "RUNNING": 10}}
    assert summary(array) == "sweep: 100 tasks (0-99%10), at most 10 at once; 90 QUEUED, 10 RUNNING"


def test_submit_with_array_and_wait_is_refused_before_any_request():
    out = CliRunner().invoke(main, ["--api", "http://127.0.0.1:9", "submit", "--array", "0-3", "--wait",
                                    "--", "true"])
    assert out.exit_code == 2 and "watch an array with: overlay array ID" in out.output


def test_submit_sends_array_and_after(monkeypatch):
    sent = {}

    def post_json(self, path, body=None):
        sent.update(path=path, body=body)
        return {"array_id": "s", "size": 4, "expression": "0-3%2", "max_running": 2, "counts": {"QUEUED": 4}}

    monkeypatch.setattr("cli.client.Client.post_json", post_json)
    out = CliRunner().invoke(main, ["submit", "--job-id", "s", "--array", "0-3%2", "--after", "prep",
                                    "--", "python", "sweep.py"])
    assert out.exit_code == 0, out.output
    assert sent["body"] == {"cmd": ["python", "sweep.py"], "job_id": "s", "array": "0-3%2",
                            "depends_on": {"afterok": ["prep"]}}
    assert out.output.strip() == "submitted array s: 4 tasks (0-3%2), at most 2 at once; 4 QUEUED"


def test_status_and_cancel_take_an_array_id(monkeypatch):
    array = {"array_id": "s", "size": 2, "expression": "0-1", "max_running": None, "user": "default",
             "account": "default", "counts": {"QUEUED": 2}, "tasks": []}
    calls = []

    def get_json(self, path, **params):
        calls.append(("GET", path))
        if path.startswith("/api/jobs/"):
            raise CliError("job 's' does not exist (404 Not Found)")
        return array

    def post_json(self, path, body=None):
        calls.append(("POST", path))
        if path.startswith("/api/jobs/"):
            raise CliError("job 's' does not exist (404 Not Found)")
        return {**array, "counts": {"CANCELLED": 2}}

    monkeypatch.setattr("cli.client.Client.get_json", get_json)
    monkeypatch.setattr("cli.client.Client.post_json", post_json)
    shown = CliRunner().invoke(main, ["status", "s"])
    assert shown.exit_code == 0 and "s: 2 tasks (0-1), no limit; 2 QUEUED" in shown.output
    cancelled = CliRunner().invoke(main, ["cancel", "s"])
    assert cancelled.exit_code == 0
    assert "cancelled array s: 2 tasks (0-1), no limit; 2 CANCELLED" in cancelled.output
    assert ("POST", "/api/arrays/s/cancel") in calls
