"""Jobs go from submit to a true end on real processes: API, scheduler, beat, two agents.

The agents have fake GPUs (NVML is the one thing replaced); everything else is real.
"""

from __future__ import annotations

import os
import stat
import time

import pytest
import requests

from overlay.store import jobs as job_store
from tests.integration.harness import (
    TERMINAL,
    alive,
    assert_no_gpu_double_booked,
    job,
    logs,
    submit,
    wait_state,
    wait_until,
)

pytestmark = pytest.mark.slow


def test_echo_hi_goes_queued_placed_running_done_and_logs_hi(two_nodes, sessions):
    submit(two_nodes, job_id="hello", cmd=["echo", "hi"])
    done = wait_state(two_nodes, "hello", TERMINAL)
    assert done["state"] == "DONE" and done["exit_code"] == 0
    assert all(done["timestamps"][k] for k in ("enqueued", "placed", "started", "finished"))
    assert "hi" in logs(two_nodes, "hello")
    with sessions() as s:
        path = [e.to_state for e in job_store.events(s, "hello")]
    assert path == ["QUEUED", "PLACED", "RUNNING", "DONE"]


def test_a_two_gpu_job_sees_exactly_its_two_gpus(two_nodes):
    submit(two_nodes, job_id="two", cmd=["sh", "-c", "echo CVD=$CUDA_VISIBLE_DEVICES"], gpus=2)
    done = wait_state(two_nodes, "two", TERMINAL)
    assert done["state"] == "DONE"
    assert f"CVD={','.join(map(str, done['gpus']))}" in logs(two_nodes, "two")
    assert len(done["gpus"]) == 2


def test_twenty_jobs_all_finish_and_no_gpu_is_held_by_two_at_once(two_nodes, sessions):
    ids = [f"batch-{i}" for i in range(20)]
    for i, job_id in enumerate(ids):
        submit(two_nodes, job_id=job_id, cmd=["sleep", "0.3"], gpus=1 + i % 2)
    for job_id in ids:
        assert wait_state(two_nodes, job_id, TERMINAL, timeout=60)["state"] == "DONE"
    assert_no_gpu_double_booked(sessions, ids)


def test_two_schedulers_at_once_never_double_book_a_gpu(stack, sessions):
    # Given two scheduler processes racing over the same queue
    stack.start_api()
    stack.start_scheduler("scheduler-1")
    stack.start_scheduler("scheduler-2")
    stack.start_agent("node-a")
    stack.start_agent("node-b")
    stack.start_beat()
    # When 30 one- and two-GPU jobs compete for 6 GPUs
    ids = [f"race-{i}" for i in range(30)]
    for i, job_id in enumerate(ids):
        submit(stack, job_id=job_id, cmd=["sleep", "0.2"], gpus=1 + i % 2)
    # Then all finish, and no GPU was ever held by two jobs at once
    for job_id in ids:
        assert wait_state(stack, job_id, TERMINAL, timeout=90)["state"] == "DONE"
    assert_no_gpu_double_booked(sessions, ids)


def test_a_non_zero_exit_fails_with_its_exit_code(two_nodes):
    submit(two_nodes, job_id="bad", cmd=["sh", "-c", "echo oops >&2; exit 3"])
    failed = wait_state(two_nodes, "bad", TERMINAL)
    assert (failed["state"], failed["exit_code"], failed["reason"]) == ("FAILED", 3, "exit code 3")
    assert "oops" in logs(two_nodes, "bad")


def test_a_job_past_its_timeout_is_killed_and_fails_with_reason_timeout(two_nodes):
    submit(two_nodes, job_id="slow", cmd=["sleep", "60"], timeout_s=1)
    failed = wait_state(two_nodes, "slow", TERMINAL, timeout=20)
    assert (failed["state"], failed["reason"]) == ("FAILED", "timeout")


def test_cancelling_a_running_job_kills_its_process_tree_within_two_seconds(two_nodes, tmp_path):
    marker = tmp_path / "grandchild.pid"
    # A job whose child starts a grandchild, which records its pid
    submit(two_nodes, job_id="long", gpus=1,
           cmd=["sh", "-c", f"sh -c 'echo $$ > {marker}; sleep 120' & wait"])
    wait_state(two_nodes, "long", {"RUNNING"})
    wait_until(lambda: marker.exists() and marker.read_text().strip(), timeout=10, what="grandchild")
    grandchild = int(marker.read_text())
    started = time.monotonic()
    response = requests.post(f"{two_nodes.api}/api/jobs/long/cancel", timeout=10)
    assert response.status_code == 200 and response.json()["state"] == "CANCELLED"
    wait_until(lambda: not alive(grandchild), timeout=5, what="the grandchild to die")
    assert time.monotonic() - started < 2.5
    # And its GPU is free again once the agent has seen it die
    wait_until(lambda: not any(g["job_id"] == "long" for n in requests.get(
        f"{two_nodes.api}/api/nodes", timeout=5).json()["nodes"] for g in n["gpus"]),
        timeout=5, what="the GPU to be freed")


def test_a_queued_job_is_cancelled_at_once(stack):
    stack.start_api()  # no scheduler: the job stays QUEUED
    submit(stack, job_id="q", cmd=["true"])
    response = requests.post(f"{stack.api}/api/jobs/q/cancel", timeout=10)
    assert response.json()["state"] == "CANCELLED"
    again = requests.post(f"{stack.api}/api/jobs/q/cancel", timeout=10)
    assert again.status_code == 409


def test_a_job_that_cannot_fit_waits_with_a_reason_and_does_not_block_others(two_nodes):
    submit(two_nodes, job_id="huge", cmd=["true"], gpus=8, priority=10)
    submit(two_nodes, job_id="small", cmd=["true"], gpus=1)
    assert wait_state(two_nodes, "small", TERMINAL)["state"] == "DONE"
    waiting = job(two_nodes, "huge")
    assert waiting["state"] == "QUEUED"
    assert "8 GPUs" in waiting["reason"], waiting["reason"]


def test_a_node_runs_no_more_jobs_than_its_agent_has_slots_and_the_rest_go_elsewhere_or_wait(stack):
    # Given two agents of 3 worker threads each: 2 job slots, one thread kept for heartbeats
    stack.start_api()
    stack.start_scheduler()
    stack.start_agent("node-a", concurrency=3)
    stack.start_agent("node-b", concurrency=3)
    stack.start_beat()
    # When five CPU-only jobs arrive (first-fit would put every one on node-a)
    for i in range(5):
        submit(stack, job_id=f"slot-{i}", cmd=["sleep", "4"])
    # Then each node runs two, and the fifth waits saying why
    running = wait_until(lambda: (js := [job(stack, f"slot-{i}") for i in range(5)])
                         and sum(j["state"] == "RUNNING" for j in js) == 4 and js,
                         timeout=20, what="four jobs running")
    assert sorted(j["node"] for j in running if j["state"] == "RUNNING") == ["node-a"] * 2 + ["node-b"] * 2
    waiting = next(j for j in running if j["state"] == "QUEUED")
    assert "every job slot busy" in waiting["reason"]
    # And while every slot is busy both nodes keep heartbeating, and all five end DONE
    for i in range(5):
        assert wait_state(stack, f"slot-{i}", TERMINAL, timeout=40)["state"] == "DONE"
    nodes = requests.get(f"{stack.api}/api/nodes", timeout=10).json()["nodes"]
    assert {n["name"]: n["agent_health"]["job_slots"] for n in nodes} == {"node-a": 2, "node-b": 2}


def test_node_selector_and_model_route_to_the_matching_node(two_nodes):
    submit(two_nodes, job_id="on-b", cmd=["true"], gpus=1, node_selector={"zone": "b"})
    submit(two_nodes, job_id="h100", cmd=["true"], gpus=1, gpu_model="h100")
    assert wait_state(two_nodes, "on-b", TERMINAL)["node"] == "node-b"
    assert wait_state(two_nodes, "h100", TERMINAL)["node"] == "node-b"


def test_an_image_job_runs_through_apptainer_exec_nv(stack, tmp_path):
    # Given an `apptainer` test double on the agent's PATH that records its argv
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "apptainer.argv"
    fake = bindir / "apptainer"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\necho "CVD=$CUDA_VISIBLE_DEVICES"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    stack.start_api()
    stack.start_scheduler()
    stack.start_agent("node-a", PATH=f"{bindir}:{os.environ['PATH']}")
    # When a job names an image
    submit(stack, job_id="img", image="alpine", cmd=["nvidia-smi", "-L"], gpus=1)
    done = wait_state(stack, "img", TERMINAL)
    # Then the agent ran `apptainer exec --nv docker://alpine nvidia-smi -L`
    assert done["state"] == "DONE"
    assert record.read_text().split("\n")[:-1] == ["exec", "--nv", "docker://alpine", "nvidia-smi", "-L"]
    assert f"CVD={done['gpus'][0]}" in logs(stack, "img")


def test_without_apptainer_an_image_job_fails_naming_apptainer_and_the_node(stack, tmp_path):
    stack.start_api()
    stack.start_scheduler()
    stack.start_agent("node-a", PATH="/usr/bin:/bin")
    submit(stack, job_id="noimg", image="alpine", cmd=["true"])
    failed = wait_state(stack, "noimg", TERMINAL)
    assert failed["state"] == "FAILED"
    assert "apptainer" in failed["reason"] and "node-a" in failed["reason"]


def test_admin_transitions_go_through_the_state_machine(stack):
    stack.start_api()
    submit(stack, job_id="adm", cmd=["true"])
    ok = requests.post(f"{stack.api}/api/admin/jobs/adm/state", json={"state": "FAILED"}, timeout=5)
    assert ok.status_code == 200 and ok.json()["state"] == "FAILED"
    illegal = requests.post(f"{stack.api}/api/admin/jobs/adm/state", json={"state": "RUNNING"}, timeout=5)
    assert illegal.status_code == 409
    assert illegal.json()["message"] == "job 'adm' cannot go from FAILED to RUNNING"

