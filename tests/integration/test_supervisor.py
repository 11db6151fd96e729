"""Jobs under their supervisors (workers/supervisor.py) outlive their agent, never run twice
at once, and end cleanly when their log cannot be written. Real agents, real signals
(SIGKILL, SIGTERM, SIGSTOP), a real full filesystem.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import (
    TERMINAL,
    Stack,
    allocations,
    events,
    job,
    logs,
    nodes,
    run_count,
    submit,
    wait_state,
    wait_until,
)

pytestmark = pytest.mark.slow
TTL_S = 4  # the Stack's NODE_TTL_S (FENCE_S is 3)


def counting_job(stack: Stack, job_id: str, seconds: int, **body) -> None:
    """A job printing ``line 1`` .. ``line <seconds>``, one a second."""
    submit(stack, job_id=job_id, **body,
           cmd=["sh", "-c", f"for i in $(seq 1 {seconds}); do echo line $i; sleep 1; done"])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_an_agent_restarted_while_its_job_runs_keeps_it_running_to_its_end(stack, sessions, sig):
    # Given node-a running a 15 s job (a TTL and a fence long enough for a Celery restart)
    stack.env.update(NODE_TTL_S="30", FENCE_S="20")
    stack.start_cluster(agents=("node-a",))
    counting_job(stack, "long", 15, gpus=1)
    wait_state(stack, "long", {"RUNNING"})
    wait_until(lambda: "line 3\n" in logs(stack, "long"), timeout=30, what="the job to be under way")

    # When its agent is killed (or stopped, as systemctl stop does)
    stack.kill("node-a", sig)
    if sig == signal.SIGTERM:
        # (a stopped agent's node says so and takes no new work)
        assert nodes(stack)["node-a"]["state"] == "stopping"
        submit(stack, job_id="meanwhile", cmd=["true"])
    # and started again
    stack.set_aside_log("node-a")
    stack.start_agent("node-a")
    # (back while the job still runs: what is tested is taking up a running attempt)
    assert "line 15\n" not in logs(stack, "long")

    # Then the job ran on: DONE, attempt 1, on node-a, with its whole output, started once
    done = wait_state(stack, "long", TERMINAL, timeout=60)
    assert (done["state"], done["attempt"], done["node"], done["exit_code"]) == ("DONE", 1, "node-a", 0), done
    output = logs(stack, "long")
    assert all(f"line {i}\n" in output for i in range(1, 16)), output
    assert run_count(sessions, "long") == 1
    assert allocations(sessions, "node-a") == []
    # (the agent removes the attempt's directory just after it has recorded the end)
    state = stack.workdir / "state" / "node-a"
    wait_until(lambda: not list(state.iterdir()), timeout=10, what="the attempt's directory to go")
    if sig == signal.SIGTERM:
        assert wait_state(stack, "meanwhile", TERMINAL)["state"] == "DONE"


def test_a_frozen_agent_never_leaves_two_attempts_of_a_job_running(stack, sessions, tmp_path):
    # Given a job, retried once if its node is lost, that logs when each attempt starts
    # and ends (one clock: this host's), the first attempt running until killed
    stack.start_cluster()
    times = tmp_path / "times"
    script = (f'echo "start $OVERLAY_ATTEMPT $(date +%s.%N)" >> {times}; '
              f'trap \'echo "end $OVERLAY_ATTEMPT $(date +%s.%N)" >> {times}; exit 143\' TERM; '
              f'if [ "$OVERLAY_ATTEMPT" = 1 ]; then sleep 300 & wait $!; else sleep 1; fi; '
              f'echo "end $OVERLAY_ATTEMPT $(date +%s.%N)" >> {times}')
    submit(stack, job_id="frozen", gpus=1, max_retries=1, cmd=["sh", "-c", script])
    lost = wait_state(stack, "frozen", {"RUNNING"})["node"]
    wait_until(lambda: times.exists() and "start 1" in times.read_text(), timeout=20, what="attempt 1")

    # When its agent is frozen (SIGSTOP) for longer than NODE_TTL_S, then thawed
    os.killpg(stack.procs[lost].pid, signal.SIGSTOP)
    try:
        retried = wait_state(stack, "frozen", TERMINAL, timeout=TTL_S + 30)
    finally:
        os.killpg(stack.procs[lost].pid, signal.SIGCONT)

    # Then the job ran again elsewhere and ended DONE
    assert (retried["state"], retried["attempt"]) == ("DONE", 2), retried
    assert retried["node"] != lost
    # and the first attempt had ended (fenced) before the second began: no overlap
    marks = {tuple(line.split()[:2]): float(line.split()[2]) for line in times.read_text().splitlines()}
    assert marks[("start", "1")] < marks[("end", "1")] <= marks[("start", "2")] < marks[("end", "2")], marks
    fenced = "attempt 1 ended (exit 143, fenced: the agent did not renew its lease"
    wait_until(lambda: fenced in stack.output(lost), timeout=30,
               what=f"{lost}'s agent to report attempt 1 fenced")
    assert job(stack, "frozen")["attempt"] == 2
    assert allocations(sessions, lost) == []


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 256 KiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the full-disk test, but mounting a tmpfs needs root")
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_job_whose_log_fills_the_disk_fails_at_once_and_frees_its_gpus(stack, sessions, small_disk):
    # Given node-a whose LOG_DIR is a small filesystem
    stack.env.update(LOG_DIR=str(small_disk))
    stack.start_cluster(agents=("node-a",))
    # When a job writes without end (as `yes` does) until the filesystem is full
    submit(stack, job_id="yes", gpus=2, cmd=["yes", "overlay"])
    # Then it fails within seconds, naming the log and the OS error, and its GPUs are free
    failed = wait_state(stack, "yes", TERMINAL, timeout=30)
    assert failed["state"] == "FAILED", failed
    assert failed["reason"].startswith(f"cannot write log {small_disk}/yes.log"), failed
    assert "No space left on device" in failed["reason"], failed
    assert allocations(sessions, "node-a") == []
    # When space is back, the next job on that node runs
    (small_disk / "yes.log").unlink()
    submit(stack, job_id="after", gpus=2, cmd=["echo", "room again"])
    after = wait_state(stack, "after", TERMINAL, timeout=30)
    assert (after["state"], after["node"]) == ("DONE", "node-a"), after
    assert "room again" in logs(stack, "after")
    assert ("FAILED", 1, failed["reason"]) in events(sessions, "yes")


def test_an_agent_refuses_to_start_with_a_fence_not_below_the_ttl(stack):
    # Given FENCE_S = NODE_TTL_S: a cut-off node's job could still run when it is retried elsewhere
    stack.env.update(FENCE_S="4", NODE_TTL_S="4")
    # When the agent starts, Then it stops at once, saying why
    stack.start_agent("node-a", wait=False)
    wait_until(lambda: stack.dead("node-a"), timeout=60, what="the agent to refuse to start")
    assert "FENCE_S=4 must be below NODE_TTL_S=4" in stack.output("node-a")
