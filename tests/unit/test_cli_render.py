"""The CLI's pure parts: option parsing, the submit body, exit statuses, tables and bars."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
import pytest

from cli import render
from cli.client import normalize
from cli.main import UNITS_MIB, UNITS_S, exit_status, scaled, submit_body

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
OPTIONS = dict(job_id=None, image=None, gpus=None, gpu_memory=None, gpu_model=None, priority=None,
               timeout=None, max_retries=None, labels={}, env={})


@pytest.mark.parametrize(("text", "mib"), [("40000", 40000), ("40G", 40960), ("40gib", 40960),
                                           ("512M", 512), ("1.5G", 1536)])
def test_gpu_memory_reads_mib_or_a_unit(text, mib):
    assert scaled(UNITS_MIB, "a size")(None, None, text) == mib  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200)])
def test_timeout_reads_seconds_or_a_unit(text, seconds):
    assert scaled(UNITS_S, "a duration")(None, None, text) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["forty", "40X", "-3", ""])
def test_a_bad_size_is_a_bad_parameter(text):
    with pytest.raises(click.BadParameter):
        scaled(UNITS_MIB, "a size")(None, None, text)  # type: ignore[arg-type]


def test_the_submit_body_carries_only_what_was_given():
    body = submit_body(("sh", "-c", "echo hi"), **{**OPTIONS, "gpus": 2, "gpu_memory": 40960,
                                                   "labels": {"zone": "a"}, "env": {"EPOCHS": "3"}})
    assert body == {"cmd": ["sh", "-c", "echo hi"], "gpus": 2, "gpu_memory_mb": 40960,
                    "node_selector": {"zone": "a"}, "env": {"EPOCHS": "3"}}
    assert submit_body(("true",), **OPTIONS) == {"cmd": ["true"]}
    gang = submit_body(("true",), **{**OPTIONS, "nodes": 2, "gpus": 4})
    assert gang == {"cmd": ["true"], "gpus": 4, "nodes": 2}


@pytest.mark.parametrize(("job", "status"), [
    ({"state": "DONE", "exit_code": 0}, 0),
    ({"state": "FAILED", "exit_code": 3}, 3),
    ({"state": "FAILED", "exit_code": -9}, 137),
    ({"state": "FAILED", "exit_code": None}, 1),
    ({"state": "CANCELLED", "exit_code": None}, 1),
    ({"state": "FAILED", "exit_code": 300}, 255),
])
def test_exit_status_is_what_a_shell_would_say(job, status):
    assert exit_status(job) == status


def test_table_aligns_columns_and_does_not_pad_the_last():
    lines = render.table(["A", "LONGER"], [["xyz", "1"], ["q", "22"]])
    assert lines == ["A    LONGER", "xyz  1", "q    22"]


@pytest.mark.parametrize(("fraction", "drawn"), [(0, "[....]"), (0.5, "[##..]"), (1.7, "[####]")])
def test_bars_fill_by_fraction_and_clamp(fraction, drawn):
    assert render.bar(fraction, 4, ascii_only=True) == drawn


@pytest.mark.parametrize(("seconds", "text"), [(0.42, "0.4s"), (42, "42s"), (192, "3m12s"),
                                               (7500, "2h05m"), (3 * 86400 + 4 * 3600, "3d04h")])
def test_durations_read_like_a_person_writes_them(seconds, text):
    assert render.duration(seconds) == text


def job(**over):
    return {"job_id": "j1", "state": "QUEUED", "reason": None, "node": None, "gpus": [], "exit_code": None,
            "attempt": 0, "timestamps": {"enqueued": (NOW - timedelta(seconds=5)).isoformat()},
            "request": {"cmd": ["sh", "-c", "echo hi"], "gpus": 1}, **over}


def test_progress_says_why_a_job_waits_where_it_runs_and_how_it_ended():
    assert render.progress(job(reason="no node has 8 free GPUs"), 0.0) == \
        "[  0.0s] j1 QUEUED waiting: no node has 8 free GPUs"
    assert render.progress(job(state="RUNNING", node="node-a", gpus=[0, 1]), 1.25).endswith(
        "j1 RUNNING on node-a GPUs 0,1")
    assert render.progress(job(state="FAILED", exit_code=3, reason="exit code 3"), 3) == \
        "[  3.0s] j1 FAILED (exit 3)"
    assert render.progress(job(state="FAILED", exit_code=-9, reason="timeout"), 3).endswith(
        "j1 FAILED (exit -9): timeout")


def test_status_lines_show_state_place_and_the_command():
    lines = render.job_lines(job(state="DONE", exit_code=0, node="node-b", gpus=[1]), NOW)
    assert "state     DONE (exit 0)" in lines
    assert "node      node-b GPUs 1" in lines
    assert "cmd       sh -c 'echo hi'" in lines
    assert any(line.startswith("enqueued") and "(5.0s ago)" in line for line in lines)


def test_status_lines_show_a_gang_jobs_rendezvous_and_each_part():
    parts = [{"part": 0, "node": "node-a", "gpus": [0, 1], "state": "RUNNING", "exit_code": None},
             {"part": 1, "node": "node-b", "gpus": [0, 1], "state": "FAILED", "exit_code": 3}]
    shown = job(state="FAILED", exit_code=3, node="node-a", gpus=[0, 1], master_addr="10.0.0.1",
                master_port=29511, parts=parts)
    shown["request"] = {**shown["request"], "gpus": 2, "nodes": 2}
    lines = render.job_lines(shown, NOW)
    assert "meets at  10.0.0.1:29511" in lines
    assert "part 0    node-a GPUs 0,1  RUNNING" in lines
    assert "part 1    node-b GPUs 0,1  FAILED (exit 3)" in lines
    assert any(line.startswith("wants") and "2 GPU(s) on each of 2 nodes" in line for line in lines)


def test_a_node_block_has_a_row_per_gpu_with_its_bars_and_holder():
    node = {"name": "node-a", "state": "online", "labels": {"zone": "a", "gpu.count": "2"},
            "last_seen_age_s": 0.5,
            "gpus": [{"index": 0, "name": "A100", "utilization_gpu_pct": 50, "memory_used_mb": 40960,
                      "memory_total_mb": 81920, "temperature_c": 60, "job_id": "train-1"},
                     {"index": 1, "name": "A100", "utilization_gpu_pct": 0, "memory_used_mb": 0,
                      "memory_total_mb": 81920, "temperature_c": None, "job_id": None}]}
    head, header, busy, idle = render.node_lines(node, ascii_only=True)
    assert head == "node-a  online  2 GPU(s)  zone=a  seen 0.5s ago"
    assert header.split() == ["GPU", "MODEL", "UTIL", "MEMORY", "(GiB)", "TEMP", "JOB"]
    assert "[#####.....]  50%" in busy and "[#####.....]  40.0/80.0" in busy and busy.endswith("train-1")
    assert idle.split()[-2:] == ["-", "-"]


@pytest.mark.parametrize(("given", "base"), [("localhost:8000/", "http://localhost:8000"),
                                             ("https://overlay.example", "https://overlay.example")])
def test_an_api_address_without_a_scheme_is_http(given, base):
    assert normalize(given) == base


def test_status_shows_the_owner_and_a_waiting_jobs_priority_parts():
    waiting = {**job(state="QUEUED"), "user": "alice", "account": "vision", "borrowed": False,
               "priority": {"value": 10340.4, "priority": 200.0, "age": 40.4, "fairshare": 10000.0,
                            "user": 100.0}}
    lines = render.job_lines(waiting, NOW)
    assert "owner     alice (vision)" in lines
    assert "priority  10340 = own 200 + age 40 + fair share 10000 + user 100" in lines
    borrowed = {**job(state="RUNNING"), "user": "bob", "account": "vision", "borrowed": True}
    held = render.job_lines(borrowed, NOW)
    assert "owner     bob (vision, borrowed)" in held


def test_no_preempt_asks_for_a_job_that_is_not_preemptible():
    body = submit_body(("true",), **{**OPTIONS, "no_preempt": True})
    assert body == {"cmd": ["true"], "preemptible": False}
    assert "preemptible" not in submit_body(("true",), **{**OPTIONS, "no_preempt": False})
    assert "not preemptible" in render.wants({"gpus": 1, "preemptible": False})


def test_status_counts_preempted_attempts_and_events_read_as_a_history():
    assert render.attempts({"attempt": 3, "preemptions": 2}) == "3 (2 preempted)"
    assert render.attempts({"attempt": 1, "preemptions": 0}) == "1"
    now = datetime(2026, 1, 5, 12, 1, tzinfo=UTC)
    rows = render.event_rows([
        {"at": "2026-01-05T12:00:00Z", "from_state": None, "to_state": "QUEUED", "attempt": 0, "node": None,
         "gpus": [], "reason": "submitted"},
        {"at": "2026-01-05T12:00:30Z", "from_state": "RUNNING", "to_state": "QUEUED", "attempt": 1,
         "node": "node-a", "gpus": [0, 1], "reason": "preempted by urgent"},
        {"at": "2026-01-05T12:00:31Z", "from_state": "QUEUED", "to_state": "QUEUED", "attempt": 1,
         "node": None, "gpus": [], "reason": "preempting low on node-a"},
    ], now)
    assert [r[1:] for r in rows] == [
        ["-> QUEUED", "0", "-", "submitted"],
        ["RUNNING -> QUEUED", "1", "node-a GPUs 0,1", "preempted by urgent"],
        ["note", "1", "-", "preempting low on node-a"],
    ]
    assert rows[1][0].startswith("2026-01-05T12:00:30Z")
