"""GPU efficiency with real processes: the agent's sampler folds fake-GPU readings into the
job (scripted by OVERLAY_FAKE_UTIL), the API and `overlay status` show them; an idle job is
marked, warned and, under the cancel policy, cancelled, unless it was submitted idle_ok."""

from __future__ import annotations

import subprocess
import sys

import requests

from tests.integration.harness import BIN, Stack, events, job, submit, wait_state, wait_until


def overlay(stack: Stack, *args: str) -> str:
    done = subprocess.run([str(BIN / "overlay"), "--api", stack.api, *args], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_jobs_gpu_use_is_sampled_and_shown_when_it_ends(stack: Stack) -> None:
    # Given node-a's agent sampling every 0.3 s
    stack.start_cluster(agents=("node-a",), GPU_SAMPLE_S="0.3")

    # When a 2-GPU job whose fake GPUs read 40% runs for 3 s
    submit(stack, job_id="steady", cmd=[sys.executable, "-c", "import time; time.sleep(3)"], gpus=2,
           gpu_memory_mb=40960, env={"OVERLAY_FAKE_UTIL": "40"})
    done = wait_state(stack, "steady", {"DONE", "FAILED"}, timeout=60)

    # Then its efficiency holds both GPUs' samples at 40%, GPU-seconds near 2 x 3 s, energy
    assert done["state"] == "DONE"
    eff = job(stack, "steady")["efficiency"]
    assert eff is not None, "no sample reached the job"
    assert (eff["util_mean_pct"], eff["util_max_pct"]) == (40.0, 40)
    assert set(eff["memory_peak_mb"]) == {"0", "1"} and eff["memory_total_mb"] == 81920
    assert 2 <= eff["gpu_seconds"] <= 10 and eff["energy_j"] > 0 and eff["gpu_memory_mb_asked"] == 40960
    # And `overlay status` prints the line a person reads
    assert "GPU util 40% mean / 40% max · peak memory" in overlay(stack, "status", "steady")
    # And the report counts it for the implicit user
    assert "default" in overlay(stack, "report", "efficiency", "--since", "1h")
    # And the cluster's history replays under best-fit beside what happened
    replay = overlay(stack, "simulate", "--from-history", "--since", "1h", "--policy", "best-fit")
    print(replay)
    assert replay.startswith("1 jobs since ") and replay.splitlines()[2].split() == ["recorded", "best-fit"]


def test_an_idle_job_is_marked_then_cancelled_and_an_idle_ok_one_runs_on(stack: Stack, sessions) -> None:
    # Given the cancel policy: idle after 1.5 s below 5%, cancelled after 4 s
    stack.start_cluster(agents=("node-a",), GPU_SAMPLE_S="0.3", IDLE_AFTER_S="1.5", IDLE_POLICY="cancel",
                        IDLE_CANCEL_AFTER_S="4")
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]

    # When two jobs whose GPUs read 0% run, one submitted idle_ok
    submit(stack, job_id="lazy", cmd=sleeper, gpus=1, env={"OVERLAY_FAKE_UTIL": "0"})
    submit(stack, job_id="notebook", cmd=sleeper, gpus=1, env={"OVERLAY_FAKE_UTIL": "0"}, idle_ok=True)

    # Then the lazy one is CANCELLED for idleness, after an idle event, and its process is gone
    lazy = wait_state(stack, "lazy", {"CANCELLED", "DONE", "FAILED"}, timeout=60)
    assert lazy["state"] == "CANCELLED" and lazy["reason"].startswith("idle: GPUs below 5% for "), lazy
    reasons = [reason or "" for _, _, reason in events(sessions, "lazy")]
    assert any(r.startswith("idle: GPUs below 5% for 1") for r in reasons), reasons
    wait_until(lambda: "lazy" not in str(requests.get(f"{stack.api}/api/nodes", timeout=5).json()),
               timeout=30, what="lazy's GPU to be free")
    # And the agent logged the warning
    assert "job lazy: idle: GPUs below 5%" in stack.output("node-a")

    # And the idle_ok notebook runs on, marked idle: in the job, the idle list, `overlay nodes`
    notebook = job(stack, "notebook")
    assert notebook["state"] == "RUNNING" and notebook["idle_since"] is not None
    assert "notebook" in overlay(stack, "list", "--idle")
    assert "notebook (IDLE" in overlay(stack, "nodes", "--ascii")
    requests.post(f"{stack.api}/api/jobs/notebook/cancel", timeout=10)
