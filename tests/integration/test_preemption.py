"""Preemption end to end, over real processes: a waiting high-priority job preempts a running
one, which traps SIGTERM, finds OVERLAY_PREEMPT_FILE, writes a checkpoint within its grace
time and exits; it goes back to the queue without using up max_retries, and resumes from its
checkpoint once the high-priority job is done."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import requests

from tests.integration.harness import TERMINAL, Stack, events, job, logs, submit, wait_state, wait_until

pytestmark = pytest.mark.slow

# Counts steps until SIGTERM; on it, reads the preemption notice, saves the step and exits.
# A later attempt finds the checkpoint and finishes from it.
CHECKPOINTING = r"""
import os, pathlib, signal, sys, time
ckpt = pathlib.Path(sys.argv[1])
if ckpt.exists():
    print(f"attempt {os.environ['OVERLAY_ATTEMPT']}: resumed from {ckpt.read_text()}", flush=True)
    sys.exit(0)
step = 0
def on_term(signum, frame):
    notice = pathlib.Path(os.environ["OVERLAY_PREEMPT_FILE"])
    said = notice.read_text().splitlines()[0] if notice.exists() else "no notice"
    print(f"SIGTERM at step {step} ({said}): checkpointing", flush=True)
    time.sleep(1)  # a checkpoint takes a while: well within the grace time
    ckpt.write_text(f"step {step}")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("started", flush=True)
while True:
    step += 1
    time.sleep(0.05)
"""


def test_a_preempted_job_checkpoints_in_its_grace_time_and_resumes_after(stack: Stack, sessions,
                                                                         tmp_path: Path):
    # Given preemption on, and node-b's 2 GPUs held by a low-priority job that checkpoints
    stack.env.update(PREEMPTION="on", PREEMPT_PRIORITY_GAP="10", PREEMPT_GRACE_S="20")
    stack.start_cluster(agents=("node-b",))
    ckpt = tmp_path / "low.ckpt"
    submit(stack, job_id="low", gpus=2, priority=0, max_retries=0,
           cmd=["python3", "-c", CHECKPOINTING, str(ckpt)])
    wait_state(stack, "low", {"RUNNING"})
    wait_until(lambda: "started" in logs(stack, "low"), timeout=30, what="the low job to be under way")

    # When a job 50 higher in priority wants both GPUs
    submit(stack, job_id="urgent", gpus=2, priority=50, cmd=["python3", "-c", "print('urgent ran')"])

    # Then the low job is preempted: SIGTERM with the notice, a checkpoint, and the urgent job runs
    urgent = wait_state(stack, "urgent", TERMINAL, timeout=60)
    assert urgent["state"] == "DONE", urgent
    wait_until(lambda: ckpt.exists(), timeout=10, what="the checkpoint")
    assert "(OVERLAY_PREEMPTED=1): checkpointing" in logs(stack, "low")
    # And the low job runs again, from its checkpoint, and ends DONE: attempt 2, its
    # preemption not counted against max_retries=0
    low = wait_state(stack, "low", TERMINAL, timeout=60)
    assert (low["state"], low["attempt"], low["preemptions"]) == ("DONE", 2, 1), low
    assert "attempt 2: resumed from step" in logs(stack, "low")
    # And the preemption is an event on both jobs, a counter, and a line of the scheduler's log
    assert ("QUEUED", 1, "preempted by urgent") in events(sessions, "low")
    assert ("QUEUED", 0, "preempting low on node-b") in events(sessions, "urgent")
    metrics = requests.get(f"{stack.api}/metrics", timeout=5).text
    assert "overlay_preemptions_total 1.0" in metrics
    assert "job low preempted for urgent on node-b" in stack.output("scheduler")
    # and the agent says the preempted attempt stopped, as a preemption's end, not a stale one
    assert "job low: preempted attempt 1 stopped (exit 0); the job goes on as attempt 2" \
        in stack.output("node-b")
    assert "after the job had moved on" not in stack.output("node-b")
    # And the urgent job was placed only after the low one had written its checkpoint and
    # exited (its GPUs were held through the grace time: never two jobs on one GPU)
    placed = datetime.fromisoformat(job(stack, "urgent")["timestamps"]["placed"])
    assert placed.timestamp() > ckpt.stat().st_mtime
