"""The pure efficiency core: folds of GPU samples, a job's summary, the idle decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from overlay.efficiency import (
    GpuSample,
    IdlePolicy,
    JobUsage,
    decide_idle,
    duration,
    energy,
    fold,
    line,
    over_asked,
    policy_for,
    report,
    summarize,
)

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def sample(util: int, *, gpu: int = 0, used: int = 1024, power: float | None = 100.0,
           energy_j: float | None = None, seconds: float = 5.0) -> GpuSample:
    return GpuSample(job_id="j", gpu_index=gpu, util_pct=util, memory_used_mb=used, memory_total_mb=81920,
                     power_w=power, energy_j=energy_j, seconds=seconds)


def test_a_fold_keeps_mean_max_peak_memory_energy_and_gpu_seconds() -> None:
    # Given two GPUs sampled three times, one with an energy counter
    usage0 = usage1 = None
    for i, (u0, u1) in enumerate([(10, 0), (40, 0), (10, 90)]):
        now = T0 + timedelta(seconds=5 * i)
        usage0 = fold(usage0, sample(u0, gpu=0, used=9000 + i), now=now, idle_util_pct=5)
        usage1 = fold(usage1, sample(u1, gpu=1, used=2000, energy_j=700.0), now=now, idle_util_pct=5)

    # When summarized against 40 GiB asked
    eff = summarize([usage0, usage1], gpu_memory_mb_asked=40960)

    # Then: mean over all six samples, the max of any, per-GPU peaks, energy from power
    # (GPU 0: 100 W x 15 s) plus the counter (GPU 1: 3 x 700 J), 30 GPU-seconds
    assert eff is not None
    assert eff.util_mean_pct == round(150 / 6, 1) and eff.util_max_pct == 90
    assert eff.memory_peak_mb == {0: 9002, 1: 2000} and eff.memory_total_mb == 81920
    assert eff.energy_j == 1500 + 2100 and eff.gpu_seconds == 30
    # GPU 1 was below 5% for its first two samples
    assert eff.idle_gpu_seconds == 10


def test_nothing_sampled_has_no_summary() -> None:
    assert summarize([]) is None


def test_the_status_line_reads_like_the_issue_says() -> None:
    usage = fold(None, sample(12, used=9318, power=None, energy_j=1.44e6), now=T0, idle_util_pct=5)
    usage = fold(usage, sample(40, used=100, power=None, energy_j=0.0), now=T0, idle_util_pct=5)
    eff = summarize([usage], gpu_memory_mb_asked=None)
    assert eff is not None
    assert line(eff) == "GPU util 26% mean / 40% max · peak memory 9.1 of 80 GiB · 0.4 kWh"


def test_below_since_starts_at_the_first_low_sample_and_clears_when_busy() -> None:
    u = fold(None, sample(50), now=T0, idle_util_pct=5)
    assert u.below_since is None
    u = fold(u, sample(1), now=T0 + timedelta(seconds=5), idle_util_pct=5)
    u = fold(u, sample(0), now=T0 + timedelta(seconds=10), idle_util_pct=5)
    assert u.below_since == T0 + timedelta(seconds=5)
    u = fold(u, sample(5), now=T0 + timedelta(seconds=15), idle_util_pct=5)  # 5 is not below 5
    assert u.below_since is None


@given(st.lists(st.integers(0, 100), min_size=1, max_size=50))
def test_the_mean_lies_between_min_and_max(utils: list[int]) -> None:
    usage = None
    for u in utils:
        usage = fold(usage, sample(u), now=T0, idle_util_pct=5)
    eff = summarize([usage]) if usage else None
    assert eff is not None
    assert min(utils) - 0.05 <= eff.util_mean_pct <= max(utils) + 0.05 and eff.util_max_pct == max(utils)


def test_a_job_asking_far_more_memory_than_it_used_gets_a_suggestion() -> None:
    assert over_asked(81920, 9000) == 11 * 1024  # 9000 MiB x 1.25 rounded up to whole GiB
    assert over_asked(12288, 9000) is None  # about right
    assert over_asked(None, 9000) is None  # nothing asked
    assert over_asked(4096, 100) is None  # less than 4 GiB to win


POLICY = IdlePolicy(util_pct=5, after_s=1800, action="warn", cancel_after_s=7200)


def test_a_job_is_marked_idle_once_all_its_gpus_stay_below_for_idle_after() -> None:
    below = [T0, T0 + timedelta(minutes=10)]
    # Given both GPUs low, the later since 10:10: not yet at 10:39, marked at 10:40
    assert decide_idle(below_since=below, marked_since=None, now=T0 + timedelta(minutes=39),
                       policy=POLICY).action == "none"
    mark = decide_idle(below_since=below, marked_since=None, now=T0 + timedelta(minutes=40), policy=POLICY)
    assert (mark.action, mark.idle_since) == ("mark", T0 + timedelta(minutes=10))
    assert mark.reason == "idle: GPUs below 5% for 30m"
    # And once marked, nothing more happens under warn
    later = decide_idle(below_since=below, marked_since=mark.idle_since, now=T0 + timedelta(hours=9),
                        policy=POLICY)
    assert later.action == "none"


def test_one_busy_gpu_keeps_the_job_from_idle_and_clears_a_mark() -> None:
    below = [T0, None]
    assert decide_idle(below_since=below, marked_since=None, now=T0 + timedelta(hours=5),
                       policy=POLICY).action == "none"
    assert decide_idle(below_since=below, marked_since=T0, now=T0 + timedelta(hours=5),
                       policy=POLICY).action == "clear"


def test_cancel_policy_ends_the_job_after_idle_cancel_after_unless_idle_ok() -> None:
    cancel = IdlePolicy(util_pct=5, after_s=1800, action="cancel", cancel_after_s=7200)
    below = [T0]
    assert decide_idle(below_since=below, marked_since=T0, now=T0 + timedelta(seconds=7199),
                       policy=cancel).action == "none"
    decision = decide_idle(below_since=below, marked_since=T0, now=T0 + timedelta(hours=2), policy=cancel)
    assert (decision.action, decision.reason) == ("cancel", "idle: GPUs below 5% for 2h")
    exempt = decide_idle(below_since=below, marked_since=T0, now=T0 + timedelta(hours=2), policy=cancel,
                         idle_ok=True)
    assert exempt.action == "none"


def test_the_policy_of_an_account_overrides_the_default() -> None:
    per_account = {"lab": "cancel", "typo": "explode"}
    assert policy_for("lab", default=POLICY, per_account=per_account).action == "cancel"
    assert policy_for("other", default=POLICY, per_account=per_account).action == "warn"
    assert policy_for("typo", default=POLICY, per_account=per_account).action == "warn"


def test_energy_reads_in_kwh_or_in_wh_when_small() -> None:
    assert [energy(j) for j in (1.44e6, 3.6e7, 4000.0, 0.0)] == ["0.4 kWh", "10 kWh", "1.1 Wh", "0 Wh"]


def test_durations_read_short() -> None:
    assert [duration(s) for s in (7200, 5400, 90, 0, 1800.7)] == ["2h", "1h30m", "1m30s", "0s", "30m"]


def job(job_id: str, user: str, account: str, asked: int, utils: list[int], *, used: int = 2048) -> JobUsage:
    usage = None
    for u in utils:
        usage = fold(usage, sample(u, used=used, power=360.0, seconds=3600.0), now=T0, idle_util_pct=5)
    assert usage is not None
    return JobUsage(job_id=job_id, user=user, account=account, gpu_memory_mb=asked, usages=(usage,))


def test_the_report_sums_per_user_or_account_and_names_jobs_that_asked_too_much() -> None:
    # Given ann's two jobs (2 GPU-hours at 50% and 1 idle hour) and bob's busy one
    jobs = [job("a1", "ann", "lab", 81920, [100, 0]), job("a2", "ann", "lab", 0, [2]),
            job("b1", "bob", "lab", 4096, [90], used=4000)]

    # When reported per user
    groups, over = report(jobs, by="user")

    # Then ann: 3 GPU-hours, 2 of them idle, mean 34% weighed by time; 0.36 kWh per GPU-hour
    ann, bob = groups
    assert (ann.group, ann.jobs, ann.gpu_hours, ann.idle_gpu_hours) == ("ann", 2, 3.0, 2.0)
    assert ann.util_mean_pct == 34.0 and ann.energy_kwh == 1.08
    assert (bob.group, bob.util_mean_pct) == ("bob", 90.0)
    # And a1 asked 80 GiB for a 2 GiB peak: 3 GiB is suggested; b1's ask was right
    assert [(o.job_id, o.suggested_mb) for o in over] == [("a1", 3072)]
    # Per account it is one line
    (lab,), _ = report(jobs, by="account")
    assert (lab.group, lab.jobs, lab.gpu_hours) == ("lab", 3, 4.0)
