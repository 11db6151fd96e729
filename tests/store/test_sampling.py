"""The agent's GPU sampler against real Postgres, called round by round with a ``now``:
samples fold into the job holding each GPU, idle jobs are marked, warned and cancelled."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from itertools import count

import pytest

from overlay.gpus.fake import FakeProbe
from overlay.states import JobState
from overlay.store import samples as sample_store
from tests.store.world import A100, T0, seconds
from workers.runtime import Runtime
from workers.sampling import Sampler, parse_script


def agent(agent_runtime: Callable[[str], Runtime], **settings: object) -> tuple[Runtime, Sampler]:
    """node-a's agent with fake GPUs on a clock that steps 5 s per sample, and its sampler."""
    rt = agent_runtime("node-a")
    rt.settings = replace(rt.settings, gpu_sample_s=5.0, **settings)  # type: ignore[arg-type]
    ticks = count(0, 5)
    rt.probe = FakeProbe(node_name="node-a", fake_gpus=f"4x{A100}", clock=lambda: float(next(ticks)))
    clock = count(0, 5)
    return rt, Sampler(rt, clock=lambda: float(next(clock)))


def test_each_round_folds_the_readings_into_the_job_holding_the_gpu(cluster, agent_runtime) -> None:
    # Given two jobs on node-a: one busy on GPUs 0-1 (asking 40 GiB), one scripted to 30% on GPU 3
    cluster.node("node-a", gpus=4)
    rt, sampler = agent(agent_runtime)
    cluster.submit("busy", gpus=2, gpu_memory_mb=40960)
    cluster.place("busy", on="node-a", gpus=(0, 1))
    cluster.start("busy")
    cluster.submit("thirty", gpus=1, env={"OVERLAY_FAKE_UTIL": "30"})
    cluster.place("thirty", on="node-a", gpus=(3,))
    cluster.start("thirty")
    rt.agent.hold("busy", (0, 1))
    rt.agent.hold("thirty", (3,))

    # When the sampler runs four rounds, 5 s apart
    for i in range(4):
        sampler.round(now=T0 + seconds(5 * i))

    # Then each job has its own GPUs' summary: 4 samples x 5 s per GPU, energy from the counter
    with cluster.sessions() as s:
        busy = sample_store.efficiency(s, "busy")
        thirty = sample_store.efficiency(s, "thirty")
    assert busy is not None and thirty is not None
    assert busy.samples == 8 and busy.gpu_seconds == 40 and set(busy.memory_peak_mb) == {0, 1}
    assert 60 <= busy.util_mean_pct <= 100 and busy.gpu_memory_mb_asked == 40960
    assert busy.memory_total_mb == 81920 and 4096 <= busy.memory_peak_max_mb <= 16384
    assert thirty.util_mean_pct == 30 and thirty.util_max_pct == 30 and thirty.idle_gpu_seconds == 0
    # 30% of a 400 W A100 in the fake's model: 0.1 + 0.85 x 0.3 of the limit = 142 W, for 20 s
    # (the first round has no earlier counter reading: it counts power x 5 s)
    assert thirty.energy_j == pytest.approx(142 * 20, abs=1)


def test_an_idle_job_is_marked_once_with_an_event_and_cleared_when_busy_again(cluster, agent_runtime) -> None:
    # Given a job whose GPU reads 0%, with IDLE_AFTER_S=10 and the warn policy
    cluster.node("node-a", gpus=4)
    rt, sampler = agent(agent_runtime, idle_after_s=10.0, idle_policy="warn")
    cluster.submit("idle", gpus=1, env={"OVERLAY_FAKE_UTIL": "0,0,0,0,0,80"})
    cluster.place("idle", on="node-a", gpus=(2,))
    cluster.start("idle")
    rt.agent.hold("idle", (2,))

    # When it is sampled at 0, 5, 10, 15 s
    actions = [sampler.round(now=T0 + seconds(5 * i)).decisions["idle"].action for i in range(4)]

    # Then it is marked at 10 s (idle since 0 s), once, with one event; it stays RUNNING
    assert actions == ["none", "none", "mark", "none"]
    with cluster.sessions() as s:
        assert sample_store.idle_since(s, "idle") == T0
        assert [j.job_id for j in sample_store.idle_jobs(s)] == ["idle"]
    assert cluster.events("idle")[-1] == ("RUNNING", 1, "idle: GPUs below 5% for 10s")
    assert cluster.job("idle").state is JobState.RUNNING

    # And when the script reaches 80% the mark is cleared
    sampler.round(now=T0 + seconds(20))
    assert sampler.round(now=T0 + seconds(25)).decisions["idle"].action == "clear"
    with cluster.sessions() as s:
        assert sample_store.idle_since(s, "idle") is None and sample_store.idle_jobs(s) == []


def test_the_cancel_policy_cancels_an_idle_job_unless_submitted_idle_ok(cluster, agent_runtime) -> None:
    # Given two idle jobs under the cancel policy (after 10 s, cancel after 20 s), one idle_ok
    cluster.node("node-a", gpus=4)
    rt, sampler = agent(agent_runtime, idle_after_s=10.0, idle_policy="cancel", idle_cancel_after_s=20.0)
    for job_id, gpu in (("lazy", 0), ("notebook", 1)):
        cluster.submit(job_id, gpus=1, env={"OVERLAY_FAKE_UTIL": "0"})
        cluster.place(job_id, on="node-a", gpus=(gpu,))
        cluster.start(job_id)
        rt.agent.hold(job_id, (gpu,))
    with cluster.sessions.begin() as s:
        sample_store.allow_idle(s, "notebook")

    # When sampled for 20 s
    for i in range(5):
        sampler.round(now=T0 + seconds(5 * i))

    # Then the lazy one is CANCELLED with the idle reason (its GPUs stay held until its
    # process is gone), the notebook runs on, marked idle
    lazy = cluster.job("lazy")
    assert (lazy.state, lazy.reason) == (JobState.CANCELLED, "idle: GPUs below 5% for 20s")
    assert cluster.holders("node-a")[0] == ("lazy", 1)
    assert cluster.job("notebook").state is JobState.RUNNING
    with cluster.sessions() as s:
        assert [j.job_id for j in sample_store.idle_jobs(s)] == ["notebook"]


def test_an_account_can_have_its_own_policy(cluster, agent_runtime) -> None:
    cluster.node("node-a", gpus=4)
    rt, sampler = agent(agent_runtime, idle_after_s=5.0, idle_policy="warn", idle_cancel_after_s=5.0,
                        idle_policy_accounts={"strict": "cancel"})
    for job_id, account, gpu in (("mine", "strict", 0), ("theirs", "default", 1)):
        cluster.submit(job_id, gpus=1, account=account, env={"OVERLAY_FAKE_UTIL": "0"})
        cluster.place(job_id, on="node-a", gpus=(gpu,))
        cluster.start(job_id)
        rt.agent.hold(job_id, (gpu,))
    for i in range(3):
        sampler.round(now=T0 + seconds(5 * i))
    assert cluster.job("mine").state is JobState.CANCELLED
    assert cluster.job("theirs").state is JobState.RUNNING


def test_the_fake_utilization_script_reads_numbers_and_ignores_garbage() -> None:
    assert parse_script("90, 0,150") == (90, 0, 100)
    assert parse_script("") == () and parse_script("lots") == ()
