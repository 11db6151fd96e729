"""The simulator with accounts: fair share, quotas and borrowing over time (pure)."""

from __future__ import annotations

import heapq
import math
import random
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from overlay.fairshare import UsageRecord, Weights, fold_usage, multifactor_order
from overlay.fleet import Fleet
from overlay.model import JobSpec, Placement
from overlay.policies import get_policy
from overlay.queueing import plan_pass
from overlay.quota import Quota, QuotaGate
from overlay.simulation import Sharing, SimEvent, simulate
from overlay.workload import EPOCH, SimJob, synthetic_fleet

HOUR = 3600.0


def backlog(shares: dict[str, int], *, gpus: int, size: int, hours: float, users: int,
            seed: int) -> list[SimJob]:
    """Jobs of ``size`` GPUs, all waiting from the start, interleaved across accounts, each
    account with more than its share of ``gpus`` could run in ``hours``."""
    rng = random.Random(seed)
    most = max(shares.values()) / sum(shares.values())
    per = math.ceil(most * gpus * hours / size * 1.3)
    jobs = [SimJob(spec=JobSpec(job_id=f"{account}-{k}", cmd=("true",), gpus=size, account=account,
                                user=f"{account}-u{k % users}"),
                   submit_s=0.0, duration_s=rng.uniform(0.5 * HOUR, 1.5 * HOUR))
            for account in shares for k in range(per)]
    rng.shuffle(jobs)  # equal times keep list order: the first pass sees the accounts mixed
    return jobs


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shares=st.lists(st.integers(1, 6), min_size=2, max_size=4), size=st.sampled_from([1, 2]),
       users=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_under_sustained_contention_each_account_gets_its_share_within_ten_percent(shares, size, users, seed):
    # Given 16 GPUs and accounts with shares (each at least a tenth), every one of them with
    # more work waiting than its share could run, for about five days
    named = {f"acct{i}": share for i, share in enumerate(shares)}
    assume(min(shares) / sum(shares) >= 0.1)
    jobs = backlog(named, gpus=16, size=size, hours=120, users=users, seed=seed)
    # When fair share (a day's half-life, hour-long jobs) orders the queue
    result = simulate(synthetic_fleet(2, 8, seed=seed), jobs, policy=get_policy("best-fit"),
                      sharing=Sharing(shares=named, half_life_s=24 * HOUR))
    # Then while all of them waited, each got its share of the GPU-hours, within 10%
    assert result.contended_s > 100 * HOUR
    for use in result.accounts:
        assert use.share is not None
        assert use.contended_use == pytest.approx(use.share, rel=0.10), use


def test_without_fair_share_the_same_backlog_goes_by_submit_order_not_by_share():
    # Given the same kind of backlog, but one account's jobs all submitted first
    named = {"big": 3, "small": 1}
    jobs = sorted(backlog(named, gpus=16, size=1, hours=48, users=1, seed=1), key=lambda j: j.spec.account)
    jobs = [SimJob(spec=j.spec, submit_s=float(i), duration_s=j.duration_s) for i, j in enumerate(jobs)]
    # When it runs with equal weights for all but age, then with fair share
    plain = simulate(synthetic_fleet(2, 8), jobs, policy=get_policy("best-fit"),
                     sharing=Sharing(shares=named, weights=Weights(fairshare=0, user=0)))
    fair = simulate(synthetic_fleet(2, 8), jobs, policy=get_policy("best-fit"),
                    sharing=Sharing(shares=named, half_life_s=24 * HOUR))
    # Then without fair share "big" has the fleet to itself; with it, "small" gets its quarter
    share = {u.account: u.contended_use for u in plain.accounts}
    assert share["big"] == 1.0 and share["small"] == 0.0
    share = {u.account: u.contended_use for u in fair.accounts}
    assert share["small"] == pytest.approx(0.25, rel=0.1)


def test_a_job_over_its_quota_waits_and_one_within_reach_of_idle_gpus_borrows():
    # Given 16 GPUs: vision may hold 4, nlp is owed 8 but asks for nothing until later
    quotas = {"vision": Quota(gpus=4), "nlp": Quota(gpus=8)}
    jobs = [SimJob(spec=JobSpec(job_id=f"v{k}", cmd=("true",), gpus=4, account="vision"), submit_s=0.0,
                   duration_s=HOUR) for k in range(4)]
    jobs.append(SimJob(spec=JobSpec(job_id="n0", cmd=("true",), gpus=8, account="nlp"), submit_s=1.0,
                       duration_s=HOUR))
    starts: dict[str, float] = {}
    result = simulate(synthetic_fleet(2, 8), jobs, policy=get_policy("best-fit"),
                      sharing=Sharing(quotas=quotas), observer=lambda e: _started(e, starts))
    # Then vision runs one job in its quota and borrows the 4 GPUs nobody is owed; the
    # other two wait, while nlp's 8 stay free for nlp, who gets them; an hour later vision
    # runs those two the same way, one in its quota and one borrowed
    assert starts == {"v0": 0.0, "v1": 0.0, "n0": 1.0, "v2": HOUR, "v3": HOUR}
    use = {u.account: u for u in result.accounts}
    assert use["vision"].borrowed == 2 and use["vision"].quota == 4 and use["nlp"].borrowed == 0
    assert use["vision"].gpu_hours == 16.0 and use["nlp"].gpu_hours == 8.0


def _started(event: SimEvent, starts: dict[str, float]) -> None:
    if event.kind == "start":
        starts[event.job.spec.job_id] = event.at_s


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), quota=st.sampled_from([None, 2, 6]), half_life_h=st.sampled_from([1, 24]))
def test_the_simulator_places_exactly_as_plan_pass_over_the_whole_queue_would(seed, quota, half_life_h):
    # Given a small fleet, accounts with users, priorities and sizes, arriving over time
    rng = random.Random(seed)
    nodes = synthetic_fleet(2, 4, seed=seed)
    jobs, at = [], 0.0
    for k in range(60):
        at += rng.expovariate(1 / 300)
        account = rng.choice(["a", "b", "c"])
        jobs.append(SimJob(spec=JobSpec(job_id=f"j{k:02d}", cmd=("true",), gpus=rng.choice([0, 1, 1, 2, 4]),
                                        priority=rng.choice([0, 0, 1]), account=account,
                                        user=rng.choice(["x", "y"]), gpu_model=rng.choice(["", "", "a100"])),
                           submit_s=at, duration_s=rng.uniform(60, 3600)))
    sharing = Sharing(shares={"a": 1, "b": 2, "c": 3}, half_life_s=half_life_h * HOUR,
                      quotas={} if quota is None else {"a": Quota(gpus=quota), "b": Quota(gpus=quota)},
                      weights=Weights(max_age_s=1800))
    seen: list[tuple[str, float, str, tuple[int, ...]]] = []

    def started(e: SimEvent) -> None:
        if e.kind == "start":
            seen.append((e.job.spec.job_id, e.at_s, e.node, e.gpus))

    simulate(nodes, jobs, policy=get_policy("best-fit"), sharing=sharing, observer=started)
    # Then every start is the one a whole-queue plan_pass, with usage folded from records, makes
    assert seen == _reference(nodes, jobs, sharing)


def _reference(nodes, jobs, sharing):
    """Event by event: ends, arrivals, then plan_pass over every waiting job."""
    fleet, gate = Fleet.from_snapshots(nodes), QuotaGate(sharing.quotas, nodes)
    queue, running, records, starts = [], [], [], []
    pending = list(jobs)
    while pending or running:
        now = min(pending[0].submit_s if pending else math.inf, running[0][0] if running else math.inf)
        while running and running[0][0] <= now:
            _, _, account, placement = heapq.heappop(running)
            fleet.release(placement.node, placement.gpus)
            gate.release(account, placement)
        while pending and pending[0].submit_s <= now:
            queue.append(pending.pop(0))
        at = EPOCH + timedelta(seconds=now)
        usage = fold_usage(records, now=at, half_life_s=sharing.half_life_s)
        order = multifactor_order(now=at, usage=usage, shares=sharing.shares, weights=sharing.weights)
        by_id = {j.spec.job_id: j for j in queue}
        for d in plan_pass(queue, fleet, policy=get_policy("best-fit"), order=order, admit=gate):
            if isinstance(d.outcome, Placement):
                job = by_id[d.job_id]
                queue.remove(job)
                starts.append((d.job_id, now, d.outcome.node, d.outcome.gpus))
                heapq.heappush(running, (now + job.duration_s, d.job_id, job.spec.account, d.outcome))
                records.append(UsageRecord(account=job.spec.account, user=job.spec.user, gpus=job.spec.gpus,
                                           start=at, end=at + timedelta(seconds=job.duration_s)))
        if not pending and not running:
            break
    return starts
